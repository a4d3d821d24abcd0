"""Shadow traffic over real sockets: the client always gets the primary's answer, never waits
for the shadow; comparisons, ignore rules, noise learning, sampling and bounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import Application
from proxy.shadow import KEPT, QUEUE, WORKERS
from tests.integration.test_fallback import metric
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    Script,
    ThreadedServers,
    answer,
    response,
    running_gateway,
    wait_for,
)

pytestmark = pytest.mark.sockets


def json_answer(document: Any, status: str = "200 OK") -> bytes:
    body = json.dumps(document).encode()
    return response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        body,
    )


PRODUCT = {"id": 7, "name": "Lamp", "price": 10, "tags": ["a", "b"]}


@contextlib.contextmanager
def gateway(
    tmp_path: Path, primary: str, shadow: str, spec: str
) -> Iterator[tuple[Application, ThreadedServers]]:
    """A gateway whose one route goes to the ``primary`` URL and is shadowed to ``shadow``."""
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  primary: {{url: '{primary}', kind: legacy}}\n"
        f"  next: {{url: '{shadow}'}}\n"
        "routes:\n"
        "  - {name: r, match: {path: /}, backend: primary,\n"
        f"     shadow: {{backend: next, {spec}}}}}\n"
    )
    with running_gateway(config) as running:
        yield running


def report(admin: str) -> dict[str, Any]:
    (entry,) = httpx.get(f"{admin}/shadow").json()["routes"]
    return entry  # type: ignore[no-any-return]


def settled(admin: str, total: int) -> dict[str, int]:
    assert wait_for(lambda: sum(report(admin)["counts"].values()) >= total, timeout=15)
    return report(admin)["counts"]  # type: ignore[no-any-return]


def get(port: int, path: str = "/products/7") -> tuple[int, bytes]:
    reply = RawClient(port).request(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    return reply.status, reply.body


def test_an_identical_answer_in_another_key_order_matches(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer(PRODUCT)))
    reordered = dict(reversed(list(PRODUCT.items())))
    shadow = start_upstream(answer(json_answer(reordered)))
    with gateway(tmp_path, primary.url, shadow.url, "percent: 100") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        for _ in range(5):
            assert get(port) == (200, json.dumps(PRODUCT).encode())
        assert settled(admin, 5) == {"match": 5, "mismatch": 0, "error": 0, "dropped": 0}
        assert report(admin)["parity"] == 1.0
        labels = {"route": "r", "backend": "next"}
        assert metric(admin, "strangler_shadow_requests_total", **labels, result="match") == 5
        mirrored = shadow.requests[0]
        assert mirrored.target == "/products/7"
        assert mirrored.header("x-strangler-shadow") == ["1"]
        assert primary.requests[0].header("x-strangler-shadow") == []


def test_a_different_field_is_a_mismatch_with_its_diff(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(answer(json_answer({**PRODUCT, "price": 12, "tags": ["a"]})))
    with gateway(tmp_path, primary.url, shadow.url, "percent: 100") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert get(port, "/products/7?x=1") == (200, json.dumps(PRODUCT).encode())
        assert settled(admin, 1) == {"match": 0, "mismatch": 1, "error": 0, "dropped": 0}
        (mismatch,) = report(admin)["mismatches"]
        assert mismatch["method"] == "GET"
        # Query values are not kept (a token travels there as often as an id).
        assert (mismatch["path"], mismatch["query"]) == ("/products/7", "x=REDACTED")
        assert mismatch["primary_backend"] == "primary"
        assert sorted(mismatch["differences"], key=lambda d: d["path"]) == [
            {"path": "$.price", "primary": 10, "shadow": 12},
            {"path": "$.tags[1]", "primary": "b", "shadow": "(absent)"},
        ]
        assert report(admin)["parity"] == 0.0
        page = httpx.get(f"{admin}/").text
        assert "<tr data-shadow='r'><td><strong>r</strong></td><td>next (100%)</td>" in page
        assert "<td class='parity'>0.0%</td>" in page
        assert "<li><code>$.price</code>: 10 → 12</li>" in page
        status = subprocess.run(
            [sys.executable, "-m", "proxy", "status", "--admin", admin],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert status[-2].split() == [
            "shadowed",
            "route",
            "shadow",
            "parity",
            "match",
            "mismatch",
            "error",
            "dropped",
        ]
        assert status[-1].split() == ["r", "next", "100%", "0.0%", "0", "1", "0", "0"]


def test_a_route_may_keep_query_values_in_its_mismatches(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(answer(json_answer({**PRODUCT, "price": 12})))
    spec = "percent: 100, record_query: true"
    with gateway(tmp_path, primary.url, shadow.url, spec) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        get(port, "/products/7?page=2&flag&sort=price")
        settled(admin, 1)
        (mismatch,) = report(admin)["mismatches"]
        assert mismatch["query"] == "page=2&flag&sort=price"
        get(port, "/products/7")
        settled(admin, 2)
        assert report(admin)["mismatches"][0]["query"] == ""


def test_status_and_listed_headers_are_compared(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(
        answer(response(headers=[("Content-Length", "2"), ("X-V", "1")], body=b"ok"))
    )
    shadow = start_upstream(
        answer(response("404 Not Found", [("Content-Length", "2"), ("X-V", "2")], b"ok")),
    )
    with gateway(tmp_path, primary.url, shadow.url, "headers: [X-V, content-type]") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert get(port) == (200, b"ok")
        settled(admin, 1)
        (mismatch,) = report(admin)["mismatches"]
        # A compared header is named, its values are not kept.
        assert mismatch["differences"] == [
            {"path": "status", "primary": 200, "shadow": 404},
            {"path": "header x-v", "primary": "REDACTED", "shadow": "REDACTED"},
        ]


def test_ignore_rules_leave_out_fields_that_legitimately_differ(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    listing = {"generated_at": "10:00", "items": [{"id": 1, "seen": "a"}, {"id": 2, "seen": "b"}]}
    other = {"generated_at": "10:01", "items": [{"id": 1, "seen": "x"}, {"id": 2, "seen": "y"}]}
    primary = start_upstream(answer(json_answer(listing)))
    shadow = start_upstream(answer(json_answer(other)))
    spec = "ignore: ['$.generated_at', '$.items[*].seen']"
    with gateway(tmp_path, primary.url, shadow.url, spec) as (_, servers):
        assert get(servers.port("gateway"))[0] == 200
        assert settled(servers.url("admin"), 1)["match"] == 1
        assert report(servers.url("admin"))["ignored"] == ["$.generated_at", "$.items[*].seen"]


def test_noise_is_learnt_from_two_answers_of_the_primary(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    counter = itertools.count()

    async def stamped(exchange: Exchange) -> None:
        await exchange.send(json_answer({**PRODUCT, "served_at": next(counter)}))

    primary = start_upstream(stamped)
    shadow = start_upstream(answer(json_answer({**PRODUCT, "served_at": -1})))
    with gateway(tmp_path, primary.url, shadow.url, "learn_noise: true") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        for _ in range(3):
            assert get(port)[0] == 200
        assert settled(admin, 3) == {"match": 3, "mismatch": 0, "error": 0, "dropped": 0}
        assert report(admin)["learned_noise"] == ["$.served_at"]
        assert len(primary.requests) == 6  # each mirrored request asked the primary again


def test_without_noise_learning_the_same_field_is_a_mismatch(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer({**PRODUCT, "served_at": 1})))
    shadow = start_upstream(answer(json_answer({**PRODUCT, "served_at": 2})))
    with gateway(tmp_path, primary.url, shadow.url, "percent: 100") as (_, servers):
        assert get(servers.port("gateway"))[0] == 200
        assert settled(servers.url("admin"), 1)["mismatch"] == 1


def test_the_client_never_waits_for_a_slow_shadow(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    release = threading.Event()

    async def held(exchange: Exchange) -> None:
        await asyncio.to_thread(release.wait, 30)
        await exchange.send(json_answer(PRODUCT))

    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(held)
    with gateway(tmp_path, primary.url, shadow.url, "timeout: 20s") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        # The answer arrives while the shadow still holds its copy of the request.
        assert get(port) == (200, json.dumps(PRODUCT).encode())
        assert wait_for(lambda: len(shadow.requests) == 1)
        assert sum(report(admin)["counts"].values()) == 0
        release.set()
        assert settled(admin, 1)["match"] == 1


def test_a_failing_shadow_changes_nothing_for_the_client(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    async def reset(exchange: Exchange) -> None:
        exchange.reset()

    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(reset)
    with gateway(tmp_path, primary.url, shadow.url, "percent: 100") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        for _ in range(3):
            assert get(port) == (200, json.dumps(PRODUCT).encode())
        assert settled(admin, 3) == {"match": 0, "mismatch": 0, "error": 3, "dropped": 0}


def test_unsafe_methods_are_mirrored_only_when_listed(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(answer(json_answer(PRODUCT)))
    post = b"POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
    with gateway(tmp_path, primary.url, shadow.url, "percent: 100") as (_, servers):
        assert RawClient(servers.port("gateway")).request(post).status == 200
        assert get(servers.port("gateway"))[0] == 200
        assert settled(servers.url("admin"), 1)["match"] == 1
        assert [r.request_line for r in shadow.requests] == ["GET /products/7 HTTP/1.1"]
    with gateway(tmp_path, primary.url, shadow.url, "methods: [POST]") as (_, servers):
        assert RawClient(servers.port("gateway")).request(post).status == 200
        assert settled(servers.url("admin"), 1)["match"] == 1
        assert shadow.requests[-1].request_line == "POST /orders HTTP/1.1"
        assert shadow.requests[-1].body == b"hello"


def test_sampling_stays_within_binomial_bounds(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(answer(json_answer(PRODUCT)))
    total, share = 400, 0.3
    with gateway(tmp_path, primary.url, shadow.url, "percent: 30") as (_, servers):
        client = RawClient(servers.port("gateway"))
        for _ in range(total):
            assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200
        assert wait_for(
            lambda: sum(report(servers.url("admin"))["counts"].values()) == len(shadow.requests)
        )
    mean, sigma = total * share, math.sqrt(total * share * (1 - share))
    assert abs(len(shadow.requests) - mean) < 4.5 * sigma  # false alarm about 1 in 150,000


def test_a_flood_of_mismatches_keeps_memory_bounded_and_the_queue_drops(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    release = threading.Event()

    async def held(exchange: Exchange) -> None:
        await asyncio.to_thread(release.wait, 30)
        await exchange.send(json_answer({**PRODUCT, "price": 99}))

    primary = start_upstream(answer(json_answer(PRODUCT)))
    shadow = start_upstream(held)
    total = 150
    with gateway(tmp_path, primary.url, shadow.url, "timeout: 30s") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        client = RawClient(port)
        for _ in range(total):
            assert client.request(b"GET /p HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200
        # Every worker holds one job, the queue is full, the rest were dropped at once.
        dropped = total - WORKERS - QUEUE
        assert report(admin)["counts"]["dropped"] == dropped
        release.set()
        counts = settled(admin, total)
        assert counts == {"match": 0, "mismatch": total - dropped, "error": 0, "dropped": dropped}
        assert len(report(admin)["mismatches"]) == KEPT
        labels = {"route": "r", "backend": "next"}
        assert (
            metric(admin, "strangler_shadow_requests_total", **labels, result="dropped") == dropped
        )


def test_a_body_the_primary_never_read_is_not_mirrored(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    shadow = start_upstream(answer(json_answer(PRODUCT)))
    post = b"POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
    # Nothing listens on port 1: the primary fails before it reads the body.
    refused = "http://127.0.0.1:1"
    with gateway(tmp_path, refused, shadow.url, "methods: [POST], timeout: 60s") as (_, servers):
        assert RawClient(servers.port("gateway")).request(post).status == 502
        # Dropped as soon as the primary is done, not after the shadow's 60 s timeout.
        assert wait_for(lambda: report(servers.url("admin"))["counts"]["dropped"] == 1)
        assert report(servers.url("admin"))["counts"] == {
            "match": 0,
            "mismatch": 0,
            "error": 0,
            "dropped": 1,
        }
    assert shadow.requests == []
