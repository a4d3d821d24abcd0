"""Fallback (docs/resilience.md): when the chosen backend fails before answering, the route's
fallback answers instead, but only when repeating the request is safe."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.app import Application
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    ThreadedServers,
    answer,
    response,
    running_gateway,
)

pytestmark = pytest.mark.sockets


async def slow(exchange: Exchange) -> None:
    await asyncio.sleep(5)
    await exchange.send(response(body=b"too late"))


@pytest.fixture
def monolith() -> Iterator[RawUpstream]:
    upstream = RawUpstream(answer(response(body=b"from the monolith"))).start()
    yield upstream
    upstream.stop()


def gateway_for(
    tmp_path: Path, monolith: RawUpstream, new_spec: str
) -> contextlib.AbstractContextManager[tuple[Application, ThreadedServers]]:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{monolith.url}', kind: legacy}}\n"
        f"  new: {new_spec}\n"
        "routes:\n"
        "  - {name: catalog, match: {path: /}, backend: new, fallback: monolith}\n"
    )
    return running_gateway(config)


def metric(admin: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{admin}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_refused_connection_falls_back_even_for_a_post(
    tmp_path: Path, monolith: RawUpstream
) -> None:
    with gateway_for(tmp_path, monolith, "{url: 'http://127.0.0.1:1'}") as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        reply = RawClient(port).request(b"GET /p HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"from the monolith")
        # The connect failed, so the body was never read or sent: safe to send it elsewhere.
        reply = RawClient(port).request(
            b"POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
        )
        assert (reply.status, reply.body) == (200, b"from the monolith")
        assert monolith.requests[-1].body == b"hello"
        assert (
            metric(
                admin,
                "strangler_fallbacks_total",
                route="catalog",
                backend="new",
                fallback="monolith",
                reason="error",
            )
            == 2.0
        )
        assert (
            metric(
                admin,
                "strangler_upstream_errors_total",
                route="catalog",
                backend="new",
                reason="unavailable",
            )
            == 2.0
        )
        assert (
            metric(
                admin,
                "strangler_requests_total",
                route="catalog",
                backend="monolith",
                kind="legacy",
                method="GET",
                code="200",
            )
            == 1.0
        )


def test_a_timeout_falls_back_for_get_but_not_for_a_post_that_was_sent(
    tmp_path: Path, monolith: RawUpstream
) -> None:
    upstream = RawUpstream(slow).start()
    try:
        spec = f"{{url: '{upstream.url}', timeout: 300ms}}"
        with gateway_for(tmp_path, monolith, spec) as (_, servers):
            port = servers.port("gateway")
            reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert (reply.status, reply.body) == (200, b"from the monolith")
            before = len(monolith.requests)
            reply = RawClient(port).request(
                b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi"
            )
            # The new backend may have acted on it: not repeated elsewhere.
            assert reply.status == 504
            assert json.loads(reply.body)["error"] == "upstream_timeout"
            assert len(monolith.requests) == before
    finally:
        upstream.stop()


def test_a_failing_function_falls_back_only_for_idempotent_methods(
    tmp_path: Path, monolith: RawUpstream
) -> None:
    spec = "{function: 'tests.functions:raises'}"
    with gateway_for(tmp_path, monolith, spec) as (_, servers):
        port = servers.port("gateway")
        get = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (get.status, get.body) == (200, b"from the monolith")
        post = RawClient(port).request(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        assert post.status == 502
        assert json.loads(post.body)["error"] == "function_error"
