"""The public request path (proxy/gateway.py), in process: the request's checks in their order
with the exact JSON of each refusal, what the upstream receives, request ids, the sticky
cookie, unmatched requests counted under route "none", and a client that goes away under a
plain ASGI server abandoning the upstream request (counted 499)."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import Application, create_app
from proxy.asgi import Message, RawHeaders
from proxy.gateway import STICKY_COOKIE
from proxy.settings import Settings

pytestmark = pytest.mark.anyio

TABLE = """\
version: 1
backends:
  shop: {url: "http://shop.internal"}
  a: {url: "http://a.internal"}
  b: {url: "http://b.internal", kind: legacy}
routes:
  - {name: shop, match: {path: /shop}, backend: shop}
  - {name: sticky, match: {path: /sticky}, split: {a: 50, b: 50}, sticky: {cookie: sid, set: true}}
"""

UUID_SHAPED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class Streamed(httpx.AsyncByteStream):
    """A body that arrives as a stream, as a real upstream's does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


class Upstream:
    """The MockTransport's handler: records each request; answers with the host's name, or
    waits forever (until cancelled) when ``hang`` is set."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.hang = False
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        self.started.set()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        host = request.url.host.encode()
        return httpx.Response(
            200, stream=Streamed(host), headers={"content-length": str(len(host))}
        )


@pytest.fixture
async def gateway(
    tmp_path: Path,
) -> AsyncIterator[tuple[Application, httpx.AsyncClient, Upstream]]:
    config = tmp_path / "routes.yaml"
    config.write_text(TABLE)
    upstream = Upstream()
    application = create_app(
        Settings(config=str(config), watch=False),
        transport=httpx.MockTransport(upstream),
        rng=random.Random(3),
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application.public), base_url="http://shop.test"
    )
    client.headers.clear()  # exactly the headers each test sends, and Host
    yield application, client, upstream
    await client.aclose()
    await application.aclose()


def samples(application: Application, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    exposition = application.metrics.exposition().decode()
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def refusal(code: str, message: str, request_id: str = "rid-1") -> dict[str, str]:
    return {"error": code, "message": message, "request_id": request_id}


async def raw_call(
    application: Application,
    method: str,
    path: bytes,
    headers: RawHeaders,
    http_version: str = "1.1",
) -> list[Message]:
    """The app called as a plain ASGI server would, without a body; the messages it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": b"",
        "headers": headers,
        "client": ("10.1.2.3", 5555),
        "server": ("gateway", 80),
    }
    await application.public(scope, receive, send)
    return sent


# -- the request's checks, in order -------------------------------------------------------


async def test_the_checks_come_in_their_order_with_exact_bodies(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    application, client, upstream = gateway
    many = [(f"x-h{n}", "v") for n in range(100)]
    long_bad = "/nothing/%2F" + "a" * 8200
    steps: list[tuple[str, str, list[tuple[str, str]], int, dict[str, str]]] = [
        (
            "TRACE",
            long_bad,
            [("host", "a"), ("host", "b"), ("transfer-encoding", "gzip"), *many],
            431,
            refusal("headers_too_large", "more than 100 header fields"),
        ),
        (
            "TRACE",
            long_bad,
            [("host", "a"), ("host", "b"), ("transfer-encoding", "gzip")],
            414,
            refusal("uri_too_long", "the request target is longer than 8192 bytes"),
        ),
        (
            "TRACE",
            "/nothing/%2F",
            [("host", "a"), ("host", "b"), ("transfer-encoding", "gzip")],
            400,
            refusal("bad_request", "more than one Host header"),
        ),
        (
            "TRACE",
            "/nothing/%2F",
            [("host", "exa mple"), ("transfer-encoding", "gzip")],
            405,
            refusal("method_not_allowed", "TRACE is not allowed"),
        ),
        (
            "GET",
            "/nothing/%2F",
            [("host", "exa mple"), ("transfer-encoding", "gzip")],
            501,
            refusal("not_implemented", "a transfer coding other than chunked is not supported"),
        ),
        (
            "GET",
            "/nothing/%2F",
            [("host", "exa mple")],
            400,
            refusal("bad_request", "bad path: encoded '/' or '\\' in the path is not allowed"),
        ),
        (
            "GET",
            "/nothing",
            [("host", "exa mple")],
            400,
            refusal("bad_request", "bad Host: 'exa mple' is not a valid host name"),
        ),
        (
            "GET",
            "/nothing//x/..",
            [("host", "Shop.Test")],
            404,
            refusal("no_route", "no route matches GET /nothing/"),
        ),
    ]
    for method, path, headers, status, body in steps:
        reply = await client.request(method, path, headers=[*headers, ("x-request-id", "rid-1")])
        assert (reply.status_code, reply.json()) == (status, body), (method, path)
        content = json.dumps(body, separators=(",", ":")).encode()
        assert reply.content == content
        assert reply.headers.multi_items() == [
            ("content-type", "application/json"),
            ("content-length", str(len(content))),
            ("x-request-id", "rid-1"),
            ("cache-control", "no-store"),
        ]
    assert upstream.seen == []
    none = {"route": "none", "backend": "none", "kind": "none"}
    assert samples(application, "strangler_requests_total") == {
        labels(**none, method="TRACE", code="431"): 1.0,
        labels(**none, method="TRACE", code="414"): 1.0,
        labels(**none, method="TRACE", code="400"): 1.0,
        labels(**none, method="TRACE", code="405"): 1.0,
        labels(**none, method="GET", code="501"): 1.0,
        labels(**none, method="GET", code="400"): 2.0,
        labels(**none, method="GET", code="404"): 1.0,
    }


async def test_header_bytes_are_limited_too(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    _, client, upstream = gateway
    reply = await client.get("/shop", headers={"x-big": "v" * 65536, "x-request-id": "rid-1"})
    assert reply.status_code == 431
    assert reply.json() == refusal("headers_too_large", "header fields larger than 65536 bytes")
    assert upstream.seen == []


async def test_a_host_is_required_of_http_1_1_only(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    application, _, upstream = gateway
    sent = await raw_call(application, "GET", b"/shop", [(b"x-request-id", b"rid-1")])
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == refusal(
        "bad_request", "an HTTP/1.1 request must carry a Host header"
    )
    assert upstream.seen == []
    sent = await raw_call(application, "GET", b"/shop", [(b"x-request-id", b"rid-1")], "1.0")
    assert sent[0]["status"] == 200
    # The backend gets the address the client reached, so its absolute URLs point back at
    # the gateway, not past it.
    assert upstream.seen[0].headers.raw[0] == (b"host", b"gateway")
    assert upstream.seen[0].headers["x-forwarded-host"] == "gateway"


# -- what the upstream receives -----------------------------------------------------------


async def test_the_upstream_request_headers_exactly(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    _, client, upstream = gateway
    reply = await client.get(
        "/shop//items/./7?b=2&a=1",
        headers=[
            ("host", "Shop.Example.:8080"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "gone"),
            ("x_under", "gone"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "client.id-1"),
        ],
    )
    assert reply.status_code == 200
    assert reply.content == b"shop.internal"
    (seen,) = upstream.seen
    assert seen.method == "GET"
    assert seen.url.raw_path == b"/shop/items/7?b=2&a=1"
    assert seen.headers.raw == [
        (b"host", b"shop.example:8080"),
        (b"x-custom", b"one"),
        (b"x-custom", b"two"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"shop.example:8080"),
        (b"via", b"1.1 strangler"),
        (b"x-request-id", b"client.id-1"),
        # The client sent none: a new trace, sampled (proxy/tracecontext.py).
        (b"traceparent", seen.headers["traceparent"].encode()),
    ]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", seen.headers["traceparent"])
    assert reply.headers["x-request-id"] == "client.id-1"


async def test_a_request_id_is_made_when_absent_or_unusable(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    _, client, upstream = gateway
    ids = []
    for sent in ({}, {"x-request-id": "not usable"}, {"x-request-id": "x" * 129}):
        reply = await client.get("/shop", headers=sent)
        made = reply.headers["x-request-id"]
        assert UUID_SHAPED.fullmatch(made), made
        assert upstream.seen[-1].headers.get_list("x-request-id") == [made]
        ids.append(made)
    assert len(set(ids)) == 3
    reply = await client.get("/shop", headers={"x-request-id": "x" * 128})
    assert reply.headers["x-request-id"] == "x" * 128


async def test_a_sticky_cookie_is_set_when_the_request_has_none(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    application, client, upstream = gateway
    sticky = next(r for r in application.runtime.table.router.routes if r.name == "sticky")
    hosts = {"a": "a.internal", "b": "b.internal"}
    for _ in range(10):
        client.cookies.clear()  # each request a newcomer
        reply = await client.get("/sticky")
        (cookie,) = reply.headers.get_list("set-cookie")
        match = re.fullmatch(r"sid=([0-9a-f]{32})(.*)", cookie)
        assert match is not None, cookie
        assert match.group(2).encode() == STICKY_COOKIE
        assert match.group(2) == "; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
        chosen = sticky.split.pick_for_key(match.group(1))
        assert upstream.seen[-1].url.host == hosts[chosen.name]
        assert "cookie" not in upstream.seen[-1].headers
    client.cookies.clear()
    reply = await client.get("/sticky", headers={"cookie": "sid=k1"})
    assert "set-cookie" not in reply.headers
    assert upstream.seen[-1].url.host == hosts[sticky.split.pick_for_key("k1").name]
    assert upstream.seen[-1].headers.get_list("cookie") == ["sid=k1"]
    reply = await client.get("/shop")
    assert "set-cookie" not in reply.headers


# -- a client that goes away ----------------------------------------------------------------


async def test_a_disconnect_abandons_the_upstream_and_counts_499(
    gateway: tuple[Application, httpx.AsyncClient, Upstream],
) -> None:
    application, _, upstream = gateway
    upstream.hang = True
    sent: list[Message] = []
    received = 0

    async def receive() -> Message:
        nonlocal received
        received += 1
        await upstream.started.wait()  # the upstream request is under way
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/shop",
        "raw_path": b"/shop",
        "query_string": b"",
        "headers": [(b"host", b"shop.test")],
        "client": ("10.1.2.3", 5555),
        "server": ("gateway", 80),
    }
    task = asyncio.get_running_loop().create_task(application.public(scope, receive, send))
    async with asyncio.timeout(10):  # a guard against a hang, not a speed check
        await task
    assert not task.cancelled()
    assert upstream.cancelled
    assert received == 1
    assert sent == []
    requests = samples(application, "strangler_requests_total")
    assert requests == {
        labels(route="shop", backend="shop", kind="new", method="GET", code="499"): 1.0
    }
    assert samples(application, "strangler_requests_in_flight")[labels(route="shop")] == 0.0
    assert application.runtime.live.usage.count == 0
