"""Retries (docs/resilience.md) over real sockets: only where safe, bounded by the route's budget;
and statuses a route lists held back so that a retry or the fallback may answer instead."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_fallback import metric
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    Script,
    answer,
    response,
    running_gateway,
)

pytestmark = pytest.mark.sockets

ERROR_503 = response(
    "503 Service Unavailable",
    [("Content-Type", "text/plain"), ("X-Upstream", "new"), ("Content-Length", "11")],
    b"come back\r\n",
)
OK = response(body=b"fine")


def in_turn(*scripts: Script) -> Script:
    """Answer the n-th request with the n-th script, and later ones with the last."""
    seen = 0

    async def script(exchange: Exchange) -> None:
        nonlocal seen
        seen += 1
        await scripts[min(seen, len(scripts)) - 1](exchange)

    return script


async def reset(exchange: Exchange) -> None:
    exchange.reset()


async def hang(exchange: Exchange) -> None:
    await asyncio.sleep(5)
    await exchange.send(OK)


def table(tmp_path: Path, new: str, route_extra: str, monolith: str = "http://127.0.0.1:1") -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{monolith}', kind: legacy}}\n"
        f"  new: {new}\n"
        "routes:\n"
        f"  - {{name: r, match: {{path: /}}, backend: new, {route_extra}}}\n"
    )
    return path


def request(port: int, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    framing = b"" if body is None else b"Content-Length: %d\r\n" % len(body)
    reply = RawClient(port).request(
        f"{method} /x HTTP/1.1\r\nHost: gw\r\n".encode() + framing + b"\r\n" + (body or b""),
        method,
    )
    return reply.status, reply.body


def test_a_reset_is_retried_for_get_but_not_for_post(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    upstream = start_upstream(in_turn(reset, answer(OK), reset, answer(OK)))
    config = table(tmp_path, f"{{url: '{upstream.url}'}}", "retries: {attempts: 2}")
    with running_gateway(config) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert request(port) == (200, b"fine")
        assert len(upstream.requests) == 2
        # The POST reached the backend before the reset: it may have acted on it.
        status, body = request(port, "POST", b"order")
        assert (status, json.loads(body)["error"]) == (502, "upstream_unavailable")
        assert len(upstream.requests) == 3
        assert (
            metric(admin, "strangler_retries_total", route="r", backend="new", reason="reset") == 1
        )
        assert (
            metric(
                admin,
                "strangler_upstream_errors_total",
                route="r",
                backend="new",
                reason="unavailable",
            )
            == 2
        )


def test_a_refused_connection_is_retried_for_any_method_up_to_the_attempts(
    tmp_path: Path,
) -> None:
    config = table(tmp_path, "{url: 'http://127.0.0.1:1'}", "retries: {attempts: 3}")
    with running_gateway(config) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        status, body = request(port, "POST", b"never sent")
        assert (status, json.loads(body)["error"]) == (502, "upstream_unavailable")
        labels = {"route": "r", "backend": "new"}
        assert metric(admin, "strangler_retries_total", **labels, reason="connect_failure") == 3
        assert metric(admin, "strangler_upstream_errors_total", **labels, reason="unavailable") == 4


def test_timeouts_are_retried_only_when_listed_and_only_for_idempotent_methods(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    upstream = start_upstream(in_turn(hang, answer(OK), hang))
    spec = f"{{url: '{upstream.url}', timeout: 300ms}}"
    config = table(tmp_path, spec, "retries: {attempts: 1, retry_on: [timeout]}")
    with running_gateway(config) as (_, servers):
        port = servers.port("gateway")
        assert request(port, "DELETE") == (200, b"fine")
        assert len(upstream.requests) == 2
        status, body = request(port, "PATCH")
        assert (status, json.loads(body)["error"]) == (504, "upstream_timeout")
        assert len(upstream.requests) == 3
        # Idempotent with a small body: kept in memory, so it is sent again, byte for byte.
        status, body = request(port, "PUT", b"sent twice")
        assert (status, json.loads(body)["error"]) == (504, "upstream_timeout")
        assert [r.body for r in upstream.requests[3:]] == [b"sent twice"] * 2
        # A body past max_body (64 KiB by default) streams as it comes and cannot go twice.
        status, body = request(port, "PUT", b"z" * 65537)
        assert (status, json.loads(body)["error"]) == (504, "upstream_timeout")
        assert len(upstream.requests) == 6


def test_a_listed_status_is_retried_and_an_unlisted_one_passed_through(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    error_500 = response("500 Internal Server Error", body=b"bug")
    upstream = start_upstream(in_turn(answer(ERROR_503), answer(OK), answer(error_500)))
    config = table(
        tmp_path, f"{{url: '{upstream.url}'}}", "retries: {attempts: 2, statuses: [503]}"
    )
    with running_gateway(config) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert request(port) == (200, b"fine")
        assert request(port) == (500, b"bug")
        assert len(upstream.requests) == 3
        assert (
            metric(admin, "strangler_retries_total", route="r", backend="new", reason="status") == 1
        )


def test_when_retries_run_out_the_client_gets_the_backends_own_answer_byte_for_byte(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    upstream = start_upstream(answer(ERROR_503))
    config = table(
        tmp_path, f"{{url: '{upstream.url}'}}", "retries: {attempts: 2, statuses: [503]}"
    )
    with running_gateway(config) as (_, servers):
        port = servers.port("gateway")
        client = RawClient(port)
        reply = client.request(b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: abc\r\n\r\n")
        assert (reply.status, reply.body) == (503, b"come back\r\n")
        assert reply.header("x-upstream") == ["new"]
        assert reply.header("content-type") == ["text/plain"]
        assert reply.header("x-request-id") == ["abc"]
        assert len(upstream.requests) == 3
        # The same connection serves the next request normally.
        again = client.request(b"HEAD /x HTTP/1.1\r\nHost: gw\r\n\r\n", "HEAD")
        assert (again.status, again.body) == (503, b"")
        # A POST is never held back or repeated.
        status, _ = request(port, "POST", b"x")
        assert status == 503
        assert len(upstream.requests) == 3 + 3 + 1


def test_the_budget_caps_retries_at_its_share_of_requests(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    upstream = start_upstream(answer(ERROR_503))
    route = "retries: {attempts: 3, statuses: [503], budget: {ratio: 0.1, min_per_second: 0}}"
    config = table(tmp_path, f"{{url: '{upstream.url}'}}", route)
    with running_gateway(config) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        client = RawClient(port)
        for _ in range(100):
            assert client.request(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n").status == 503
        # A failing backend saw 10% more traffic, not four times as much.
        assert len(upstream.requests) == 110
        assert (
            metric(admin, "strangler_retries_total", route="r", backend="new", reason="status")
            == 10
        )
        assert metric(admin, "strangler_retry_budget_exhausted_total", route="r") == 100


def test_a_listed_status_sends_idempotent_requests_to_the_fallback(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    monolith = start_upstream(answer(response(body=b"from the monolith")))
    error_500 = response("500 Internal Server Error", body=b"bug")
    new = start_upstream(in_turn(answer(ERROR_503), answer(error_500), answer(ERROR_503)))
    config = table(
        tmp_path,
        f"{{url: '{new.url}'}}",
        "fallback: {backend: monolith, statuses: [503]}",
        monolith=monolith.url,
    )
    with running_gateway(config) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert request(port) == (200, b"from the monolith")
        assert request(port) == (500, b"bug")  # not listed
        assert request(port, "POST", b"x") == (503, b"come back\r\n")
        assert len(monolith.requests) == 1
        labels = {"route": "r", "backend": "new"}
        fallbacks = "strangler_fallbacks_total"
        assert metric(admin, fallbacks, **labels, fallback="monolith", reason="status") == 1
        assert metric(admin, "strangler_upstream_errors_total", **labels, reason="status") == 1


def test_a_listed_response_too_large_to_hold_is_passed_through(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    monolith = start_upstream(answer(response(body=b"from the monolith")))
    big = bytes(range(256)) * 400  # 100 KiB, past the 64 KiB held back
    new = start_upstream(answer(response("503 Service Unavailable", body=big)))
    config = table(
        tmp_path,
        f"{{url: '{new.url}'}}",
        "fallback: {backend: monolith, statuses: [503]}",
        monolith=monolith.url,
    )
    with running_gateway(config) as (_, servers):
        assert request(servers.port("gateway")) == (503, big)
        assert monolith.requests == []


def test_retries_then_the_fallback(
    tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]
) -> None:
    monolith = start_upstream(answer(response(body=b"from the monolith")))
    new = start_upstream(answer(ERROR_503))
    config = table(
        tmp_path,
        f"{{url: '{new.url}'}}",
        "retries: {attempts: 2, statuses: [503]}, fallback: {backend: monolith, statuses: [503]}",
        monolith=monolith.url,
    )
    with running_gateway(config) as (_, servers):
        assert request(servers.port("gateway")) == (200, b"from the monolith")
        assert (len(new.requests), len(monolith.requests)) == (3, 1)
