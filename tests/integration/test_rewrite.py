"""Path rewrites through a real gateway (docs/routing.md, "Rewriting paths"): what a url
backend receives, byte for byte, with its base path and the query; X-Forwarded-Prefix; and a
function backend that keeps the client's path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Exchange, RawClient, RawUpstream, response, running_gateway, write_table

pytestmark = pytest.mark.sockets


async def echo(exchange: Exchange) -> None:
    seen = {
        "target": exchange.request.target,
        "prefix": exchange.request.header("x-forwarded-prefix"),
    }
    await exchange.send(response(body=json.dumps(seen).encode()))


ROUTES = """\
  - {name: rest, match: {path: /}, backend: up}
  - {name: shop, match: {path: /shop/catalog}, backend: up, rewrite: {prefix: /v2/items}}
  - {name: strip, match: {path: /legacy}, backend: based, rewrite: {prefix: /}}
  - {name: orders, match: {path: "/api/v1/orders/{id}"}, backend: up,
     rewrite: {path: "/orders/{id}/detail"}}
  - {name: files, match: {path: "/f/{rest+}"}, backend: up, rewrite: {path: "/store/{rest+}"}}
  - {name: fn, match: {path: "/fn/{id}"}, backend: fn, rewrite: {path: "/other/{id}"}}
"""


@pytest.mark.parametrize(
    ("sent", "target", "prefix"),
    [
        (b"/shop/catalog/7?x=1&y", "/v2/items/7?x=1&y", ["/shop/catalog"]),
        (b"/shop/catalog", "/v2/items", ["/shop/catalog"]),
        (b"/shop/./catalog//7/", "/v2/items/7/", ["/shop/catalog"]),
        (b"/legacy/a/b?", "/base/a/b?", ["/legacy"]),  # the backend's base path still prefixes
        (b"/api/v1/orders/42?q=%20", "/orders/42/detail?q=%20", []),
        (b"/api/v1/orders/caf%c3%a9", "/orders/caf%C3%A9/detail", []),
        (b"/f/a/b/c.txt", "/store/a/b/c.txt", []),
        (b"/other", "/other", []),
    ],
)
def test_a_url_backend_gets_the_rewritten_path_and_the_query_as_sent(
    tmp_path: Path, sent: bytes, target: str, prefix: list[str]
) -> None:
    upstream = RawUpstream(echo).start()
    try:
        backends = {
            "up": f"{{url: '{upstream.url}'}}",
            "based": f"{{url: '{upstream.url}/base'}}",
            "fn": "{function: 'tests.functions:echo'}",
        }
        config = write_table(tmp_path / "routes.yaml", backends, ROUTES)
        with running_gateway(config) as (_, servers):
            client = RawClient(servers.port("gateway"))
            # A client's own X-Forwarded-Prefix never reaches the backend.
            reply = client.request(
                b"GET " + sent + b" HTTP/1.1\r\nHost: gw\r\nX-Forwarded-Prefix: /evil\r\n\r\n"
            )
    finally:
        upstream.stop()
    assert reply.status == 200
    assert json.loads(reply.body) == {"target": target, "prefix": prefix}


def test_a_function_backend_keeps_the_clients_path(tmp_path: Path) -> None:
    config = write_table(
        tmp_path / "routes.yaml",
        {"fn": "{function: 'tests.functions:echo'}"},
        ROUTES.replace("backend: up", "backend: fn").replace("backend: based", "backend: fn"),
    )
    with running_gateway(config) as (_, servers):
        reply = RawClient(servers.port("gateway")).request(
            b"GET /fn/42?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
    event = json.loads(reply.body)["event"]
    assert (event["rawPath"], event["rawQueryString"]) == ("/fn/42", "x=1")
    assert event["pathParameters"] == {"id": "42"}
