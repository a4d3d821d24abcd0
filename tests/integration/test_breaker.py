"""Circuit breakers (docs/resilience.md) over real sockets: open on failures, refuse with 503
``circuit_open`` or let the fallback answer without touching the backend, probe, close; the
state in metrics, /routes and on the admin page."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.app import Application
from tests.integration.test_fallback import metric
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    ThreadedServers,
    response,
    running_gateway,
    wait_for,
)

pytestmark = pytest.mark.sockets

BREAKER = "{failure_ratio: 0.5, min_requests: 4, window: 10s, open_for: 1s}"


class Flaky:
    """An upstream that answers 500 until it is told it is healthy."""

    def __init__(self) -> None:
        self.healthy = False
        self.upstream = RawUpstream(self.script).start()

    async def script(self, exchange: Exchange) -> None:
        if self.healthy:
            await exchange.send(response(body=b"recovered"))
        else:
            await exchange.send(response("500 Internal Server Error", body=b"broken"))


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    made = Flaky()
    yield made
    made.upstream.stop()


@pytest.fixture
def monolith() -> Iterator[RawUpstream]:
    async def script(exchange: Exchange) -> None:
        await exchange.send(response(body=b"from the monolith"))

    upstream = RawUpstream(script).start()
    yield upstream
    upstream.stop()


@contextlib.contextmanager
def gateway(
    tmp_path: Path, flaky: Flaky, monolith: RawUpstream, fallback: bool
) -> Iterator[tuple[Application, ThreadedServers]]:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{monolith.url}', kind: legacy}}\n"
        f"  new: {{url: '{flaky.upstream.url}', circuit_breaker: {BREAKER}}}\n"
        "routes:\n"
        "  - {name: r, match: {path: /}, backend: new"
        + (", fallback: monolith}\n" if fallback else "}\n")
    )
    with running_gateway(config) as running:
        yield running


def get(port: int, request_id: str = "req-1") -> tuple[int, bytes]:
    reply = RawClient(port).request(
        f"GET /x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
    )
    return reply.status, reply.body


def state(admin: str) -> dict[str, float]:
    return {
        name: metric(admin, "strangler_circuit_breaker_state", backend="new", state=name)
        for name in ("closed", "open", "half_open")
    }


def test_opens_refuses_probes_and_closes(
    tmp_path: Path, flaky: Flaky, monolith: RawUpstream
) -> None:
    with gateway(tmp_path, flaky, monolith, fallback=False) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        assert state(admin) == {"closed": 1, "open": 0, "half_open": 0}
        for _ in range(4):
            assert get(port) == (500, b"broken")
        assert state(admin) == {"closed": 0, "open": 1, "half_open": 0}
        # Open: refused at once, and the backend sees nothing.
        status, body = get(port, "req-open")
        assert status == 503
        assert json.loads(body) == {
            "error": "circuit_open",
            "message": "backend 'new' is failing; its circuit is open",
            "request_id": "req-open",
        }
        assert len(flaky.upstream.requests) == 4
        described = httpx.get(f"{admin}/routes").json()["backends"][1]["circuit_breaker"]
        assert described["state"] == "open"
        page = httpx.get(f"{admin}/").text
        assert "<li data-backend='new' data-state='open'>" in page
        assert (
            metric(
                admin,
                "strangler_upstream_errors_total",
                route="r",
                backend="new",
                reason="circuit_open",
            )
            == 1
        )
        # After open_for, a failing probe opens it again.
        time.sleep(1.1)
        assert get(port) == (500, b"broken")
        assert state(admin)["open"] == 1
        assert get(port)[0] == 503
        # The backend recovers; the next probe closes the circuit.
        flaky.healthy = True
        time.sleep(1.1)
        assert get(port) == (200, b"recovered")
        assert state(admin) == {"closed": 1, "open": 0, "half_open": 0}
        assert get(port) == (200, b"recovered")
        assert len(flaky.upstream.requests) == 7


def test_while_open_the_fallback_answers_without_touching_the_backend(
    tmp_path: Path, flaky: Flaky, monolith: RawUpstream
) -> None:
    with gateway(tmp_path, flaky, monolith, fallback=True) as (_, servers):
        port, admin = servers.port("gateway"), servers.url("admin")
        for _ in range(4):
            assert get(port) == (500, b"broken")
        # Even a POST: a refused circuit provably never sent the request.
        reply = RawClient(port).request(
            b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\nbody"
        )
        assert (reply.status, reply.body) == (200, b"from the monolith")
        assert monolith.requests[-1].body == b"body"
        assert get(port) == (200, b"from the monolith")
        assert len(flaky.upstream.requests) == 4
        labels = {"route": "r", "backend": "new"}
        fell = {
            reason: metric(
                admin, "strangler_fallbacks_total", **labels, fallback="monolith", reason=reason
            )
            for reason in ("error", "circuit_open", "status")
        }
        assert fell == {"error": 0, "circuit_open": 2, "status": 0}


def test_a_reload_that_changes_the_breaker_keeps_one_set_of_state_series(
    tmp_path: Path, flaky: Flaky, monolith: RawUpstream
) -> None:
    with gateway(tmp_path, flaky, monolith, fallback=False) as (application, servers):
        admin = servers.url("admin")
        config = Path(application.settings.config)
        config.write_text(config.read_text().replace("min_requests: 4", "min_requests: 5"))
        assert httpx.post(f"{admin}/reload", json={}).status_code == 200
        assert state(admin) == {"closed": 1, "open": 0, "half_open": 0}
        # The old backend is closed once its table drains; the new breaker's series stay.
        assert wait_for(lambda: not application.reloader._closing)
        assert state(admin) == {"closed": 1, "open": 0, "half_open": 0}
        changed = BREAKER.replace("min_requests: 4", "min_requests: 5")
        config.write_text(config.read_text().replace(f", circuit_breaker: {changed}", ""))
        assert httpx.post(f"{admin}/reload", json={}).status_code == 200
        assert wait_for(lambda: not application.reloader._closing)
        exposition = httpx.get(f"{admin}/metrics").text
        assert "strangler_circuit_breaker_state{" not in exposition
