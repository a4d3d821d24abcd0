"""Long streams over real sockets (docs/forwarding.md, "Timers"): a route's ``timeout: 0``
lets server-sent events outlive the backend's timeout, ``idle_timeout`` ends a stream that
went quiet, and bounds the wait for a head when there is no whole-exchange timeout."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import Exchange, RawClient, RawUpstream, running_gateway, write_table

pytestmark = pytest.mark.sockets

EVENTS = [b'id: %d\nevent: status\ndata: {"n": %d}\n\n' % (n, n) for n in range(8)]


async def events(exchange: Exchange) -> None:
    """Eight events 0.3 s apart (2.4 s in all); /stall stops after two and holds the
    connection; /silent never answers."""
    target = exchange.request.target
    if target == "/silent":
        await asyncio.sleep(30)
        return
    await exchange.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for number, event in enumerate(EVENTS):
        if target == "/stall" and number == 2:
            await asyncio.sleep(30)
        await exchange.send(b"%x\r\n%b\r\n" % (len(event), event))
        await asyncio.sleep(0.3)
    await exchange.send(b"0\r\n\r\n")


@contextmanager
def gateway(tmp_path: Path, route: str) -> Iterator[tuple[int, str]]:
    upstream = RawUpstream(events).start()
    try:
        config = write_table(
            tmp_path / "routes.yaml",
            {"up": f"{{url: '{upstream.url}', timeout: 1s}}"},
            f"  - {{name: live, match: {{path: /}}, backend: up{route}}}",
        )
        with running_gateway(config) as (_, servers):
            yield servers.port("gateway"), servers.url("admin")
    finally:
        upstream.stop()


def read_stream(port: int, target: bytes) -> tuple[bytes, bytes, bool]:
    """The head, the de-chunked body, and whether the body ended with its last chunk (False:
    the connection was closed mid-body)."""
    client = RawClient(port, timeout=20)
    client.send(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    head = client.read_head()
    body = b""
    while True:
        try:
            line = client._read_line()
        except ConnectionError:
            return head, body, False
        size = int(line, 16)
        if size == 0:
            return head, body, True
        body += client.read_exactly(size)
        client.read_exactly(2)


def test_a_route_timeout_of_0_lets_events_outlive_the_backends_timeout(tmp_path: Path) -> None:
    with gateway(tmp_path, ", timeout: 0") as (port, _):
        started = time.monotonic()
        head, body, complete = read_stream(port, b"/events")
        lasted = time.monotonic() - started
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"content-type: text/event-stream" in head
    assert (body, complete) == (b"".join(EVENTS), True)
    assert lasted > 2.0  # twice the backend's 1 s timeout


def test_without_it_the_backends_timeout_cuts_the_stream(tmp_path: Path) -> None:
    with gateway(tmp_path, "") as (port, admin):
        _, body, complete = read_stream(port, b"/events")
        aborted = httpx.get(f"{admin}/metrics").text
    assert not complete
    assert body in [b"".join(EVENTS[:n]) for n in range(2, 5)]
    assert 'strangler_upstream_errors_total{backend="up",reason="aborted",route="live"} 1.0' in (
        aborted
    )


def test_a_stream_idle_for_its_idle_timeout_is_ended(tmp_path: Path) -> None:
    with gateway(tmp_path, ", timeout: 0, idle_timeout: 1s") as (port, admin):
        started = time.monotonic()
        _, body, complete = read_stream(port, b"/stall")
        lasted = time.monotonic() - started
        metrics = httpx.get(f"{admin}/metrics").text
    # Two events, then a second of nothing: cut, visibly incomplete, long before the 30 s stall.
    assert (body, complete) == (EVENTS[0] + EVENTS[1], False)
    assert 1.0 < lasted < 10
    assert 'reason="aborted",route="live"} 1.0' in metrics
    # The same idle timeout never cuts a stream that keeps moving (0.3 s between events).
    with gateway(tmp_path, ", timeout: 0, idle_timeout: 1s") as (port, _):
        assert read_stream(port, b"/events")[1:] == (b"".join(EVENTS), True)


def test_with_timeout_0_the_idle_timeout_bounds_the_wait_for_the_head(tmp_path: Path) -> None:
    with gateway(tmp_path, ", timeout: 0, idle_timeout: 1s") as (port, _):
        reply = RawClient(port, timeout=20).request(b"GET /silent HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 504
    body = json.loads(reply.body)
    assert (body["error"], body["message"]) == (
        "upstream_timeout",
        "backend 'up' did not answer within 1s",
    )


def test_a_function_with_timeout_0_is_bounded_by_its_idle_timeout(tmp_path: Path) -> None:
    config = write_table(
        tmp_path / "routes.yaml",
        {"fn": "{function: 'tests.functions:async_sleeps', timeout: 0, idle_timeout: 1s}"},
    )
    with running_gateway(config) as (_, servers):
        reply = RawClient(servers.port("gateway"), timeout=20).request(
            b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
    assert reply.status == 504
    assert json.loads(reply.body)["message"] == "function 'fn' did not return within 1s"
