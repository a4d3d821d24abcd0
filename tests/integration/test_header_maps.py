"""A route's request_headers and response_headers through a real gateway (docs/routing.md,
"Setting and removing headers"): what a url backend and a function see, what the client gets
from each, and that the gateway's own error answers are left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Exchange, RawClient, RawUpstream, response, running_gateway, write_table

pytestmark = pytest.mark.sockets

MAPS = """\
    request_headers: {set: {X-Tenant: acme}, add: {X-By: gw}, remove: [X-Debug]}
    response_headers:
      set: {Cache-Control: no-store}
      add: {X-Served-By: route}
      remove: [Server, X-Powered-By]
"""


async def upstream_script(exchange: Exchange) -> None:
    seen = {name: exchange.request.header(name) for name in ("x-tenant", "x-by", "x-debug")}
    await exchange.send(
        response(
            headers=[
                ("Server", "legacy/1.0"),
                ("X-Powered-By", "PHP/5"),
                ("Cache-Control", "public, max-age=60"),
                ("Content-Length", str(len(json.dumps(seen)))),
            ],
            body=json.dumps(seen).encode(),
        )
    )


REQUEST = b"GET {path} HTTP/1.1\r\nHost: gw\r\nX-Tenant: evil\r\nX-Debug: 1\r\nX-By: client\r\n\r\n"


def test_every_backend_of_the_route_gets_the_maps_and_errors_do_not(tmp_path: Path) -> None:
    upstream = RawUpstream(upstream_script).start()
    routes = (
        f"  - name: up\n    match: {{path: /up}}\n    backend: up\n{MAPS}"
        f"  - name: fn\n    match: {{path: /fn}}\n    backend: fn\n{MAPS}"
        f"  - name: down\n    match: {{path: /down}}\n    backend: down\n{MAPS}"
    )
    backends = {
        "up": f"{{url: '{upstream.url}'}}",
        "fn": "{function: 'tests.functions:echo'}",
        "down": "{url: 'http://127.0.0.1:9', connect_timeout: 1s}",
    }
    try:
        config = write_table(tmp_path / "routes.yaml", backends, routes)
        with running_gateway(config) as (_, servers):
            client = RawClient(servers.port("gateway"))
            proxied = client.request(REQUEST.replace(b"{path}", b"/up"))
            function = client.request(REQUEST.replace(b"{path}", b"/fn"))
            failed = client.request(REQUEST.replace(b"{path}", b"/down"))
    finally:
        upstream.stop()
    # Remove, then set, then add: the client's X-Tenant replaced, its X-By kept and one added.
    assert json.loads(proxied.body) == {
        "x-tenant": ["acme"],
        "x-by": ["client", "gw"],
        "x-debug": [],
    }
    assert [(n, v) for n, v in proxied.headers if n != "x-request-id"] == [
        ("content-length", str(len(proxied.body))),
        ("cache-control", "no-store"),
        ("x-served-by", "route"),
    ]
    headers = json.loads(function.body)["event"]["headers"]
    assert (headers["x-tenant"], headers["x-by"], "x-debug" in headers) == (
        "acme",
        "client,gw",
        False,
    )
    assert function.header("cache-control") == ["no-store"]
    assert function.header("x-served-by") == ["route"]
    # The gateway's own 502 is not the backend's answer: the map leaves it alone.
    assert failed.status == 502
    assert failed.header("cache-control") == ["no-store"]  # the gateway's own, as always
    assert failed.header("x-served-by") == []
