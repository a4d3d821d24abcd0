"""The timers of one exchange (proxy/backends/base.py, ``timers``; docs/forwarding.md,
"Timers"): the route's values win over the backend's, ``timeout: 0`` leaves the idle timeout
to bound the head, and the idle default depends on whether the request is a handshake."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.backends.base import ProxyRequest, timers
from proxy.table.model import Backend, Kind

BACKEND = Backend(
    name="b",
    kind=Kind.NEW,
    url="http://b",
    function=None,
    lambda_url=None,
    timeout=30.0,
    connect_timeout=2.0,
    max_concurrency=512,
    location="t.yaml:1:1",
)


def request(**route: object) -> ProxyRequest:
    return ProxyRequest(
        method="GET",
        path="/",
        query=b"",
        headers=[],
        body=None,
        request_id="r",
        route="r",
        route_key="ANY /",
        captures={},
        client_ip="127.0.0.1",
        host=None,
        protocol="HTTP/1.1",
        task=None,  # type: ignore[arg-type]  # timers never look at it
        **route,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("backend", "route", "expected"),
    [
        ({}, {}, (30.0, True, 60.0)),
        ({}, {"upgrade": b"websocket"}, (30.0, True, 300.0)),
        ({"idle_timeout": 5.0}, {}, (30.0, True, 5.0)),
        ({"idle_timeout": 5.0}, {"idle_timeout": 7.0}, (30.0, True, 7.0)),
        ({}, {"timeout": 2.0}, (2.0, True, 60.0)),
        # timeout 0: no whole-exchange deadline; the idle timeout bounds the head.
        ({"timeout": 0.0}, {}, (60.0, False, 60.0)),
        ({}, {"timeout": 0.0, "idle_timeout": 9.0}, (9.0, False, 9.0)),
        ({"timeout": 0.0}, {"timeout": 4.0}, (4.0, True, 60.0)),
        ({"timeout": 0.0, "idle_timeout": 0.0}, {}, (0.0, False, 0.0)),
        ({}, {"idle_timeout": 0.0}, (30.0, True, 0.0)),
    ],
)
def test_the_routes_values_win_and_zero_switches_a_timer_off(
    backend: dict[str, float], route: dict[str, object], expected: tuple[float, bool, float]
) -> None:
    assert timers(dataclasses.replace(BACKEND, **backend), request(**route)) == expected


def test_the_model_defaults_are_the_documented_ones() -> None:
    from proxy.table import model

    assert (model.DEFAULT_STREAM_IDLE_TIMEOUT, model.DEFAULT_TUNNEL_IDLE_TIMEOUT) == (60.0, 300.0)
