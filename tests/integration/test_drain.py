"""Graceful shutdown over real sockets: SIGTERM turns readiness off at once, keeps serving for
the grace period, lets requests in flight finish up to the drain timeout, then exits 0."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Exchange, RawUpstream, response, serve_process, wait_for

pytestmark = pytest.mark.sockets


async def script(exchange: Exchange) -> None:
    """/slow answers after 2 s, /hang after 30 s, anything else at once."""
    target = exchange.request.target
    if target == "/slow":
        await asyncio.sleep(2)
    elif target == "/hang":
        await asyncio.sleep(30)
    await exchange.send(response(body=target.encode()))


def write(tmp_path: Path, upstream: RawUpstream) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  up: {{url: '{upstream.url}', timeout: 60s}}\n"
        "routes:\n  - {name: all, match: {path: /}, backend: up}\n"
    )
    return config


def in_background(url: str, outcome: dict[str, Any]) -> threading.Thread:
    def call() -> None:
        try:
            reply = httpx.get(url, timeout=60)
            outcome["status"], outcome["body"] = reply.status_code, reply.content
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    upstream = RawUpstream(script).start()
    try:
        process, gateway, admin = serve_process(
            write(tmp_path, upstream), "--shutdown-grace", "1", "--drain-timeout", "10"
        )
        assert httpx.get(f"{admin}/readyz").status_code == 200
        slow: dict[str, Any] = {}
        worker = in_background(f"{gateway}/slow", slow)
        assert wait_for(lambda: upstream.heads_received == 1)
        process.proc.send_signal(signal.SIGTERM)
        # Not ready any more, at once...
        assert wait_for(lambda: httpx.get(f"{admin}/readyz").status_code == 503)
        assert httpx.get(f"{admin}/readyz").json() == {"status": "draining"}
        # ...but new requests are still served during the grace period.
        assert httpx.get(f"{gateway}/fast").content == b"/fast"
        worker.join(30)
        assert slow == {"status": 200, "body": b"/slow"}
        assert process.proc.wait(20) == 0
    finally:
        upstream.stop()


def test_the_drain_timeout_bounds_the_wait(tmp_path: Path) -> None:
    upstream = RawUpstream(script).start()
    try:
        process, gateway, _ = serve_process(
            write(tmp_path, upstream), "--shutdown-grace", "0", "--drain-timeout", "1"
        )
        hung: dict[str, Any] = {}
        worker = in_background(f"{gateway}/hang", hung)
        assert wait_for(lambda: upstream.heads_received == 1)
        signalled = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(20) == 0
        # Cut after the drain timeout, long before the upstream's 30 s.
        assert time.monotonic() - signalled < 15
        worker.join(30)
        assert "error" in hung or hung.get("status", 0) >= 500
    finally:
        upstream.stop()
