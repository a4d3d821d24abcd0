"""Hostile peers over real sockets, with the exact bytes that once got through: an upstream
that writes a second response after its first, trailer fields on both sides, heads that never
end, statuses that are not statuses, upgrade offers, and clients that pipeline a broken request
or announce a body they never send. Each test asserts what the client and the backend
received, byte for byte, and that the next request is served."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.app import Application
from tests.integration.conftest import ProxyTo
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
    write_table,
)

pytestmark = pytest.mark.sockets

GET = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


def rid(value: str) -> bytes:
    return b"x-request-id: " + value.encode() + b"\r\n"


# ---- an upstream's bytes belong to one response only -------------------------------------------

INJECTED = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    b"HTTP/1.1 302 Found\r\nSet-Cookie: session=ATTACKER; Path=/\r\n"
    b"Location: https://evil.example/\r\nCache-Control: public\r\nContent-Length: 60\r\n\r\n"
)


def test_a_second_response_in_the_same_write_adds_nothing_to_the_first(
    proxy_to: ProxyTo,
) -> None:
    upstream, port = proxy_to(answer(INJECTED))
    client = RawClient(port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: victim-1\r\n\r\n")
    head = client.read_head()
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n" + rid("victim-1")[:-2]
    assert client.read_exactly(2) == b"ok"
    # The connection that carried the extra bytes is never used again.
    assert client.request(GET).body == b"ok"
    assert upstream.connections == 2


def test_a_response_after_a_304_gives_it_no_fields(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(
            b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'
            b"HTTP/1.1 200 OK\r\nSet-Cookie: session=ATTACKER\r\nContent-Length: 0\r\n\r\n"
        )
    )
    client = RawClient(port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: victim-2\r\n\r\n")
    assert (
        client.read_head() == b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\n' + rid("victim-2")[:-2]
    )
    client.request(GET)
    assert upstream.connections == 2


# ---- trailer fields are never header fields ----------------------------------------------------


def test_request_trailers_in_the_same_read_never_become_headers(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    reply = RawClient(port).request(
        b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nX-Request-Id: t-1\r\n\r\n"
        b"3\r\nabc\r\n0\r\nCookie: session=admin\r\nX-Admin: 1\r\n\r\n"
    )
    assert (reply.status, reply.body) == (200, b"ok")
    (seen,) = upstream.requests
    (traceparent,) = seen.header("traceparent")  # a new trace: the client sent none
    assert seen.head == (
        b"POST / HTTP/1.1\r\nhost: gw\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"
        b"x-forwarded-host: gw\r\nvia: 1.1 strangler\r\nx-request-id: t-1\r\n"
        b"traceparent: " + traceparent.encode() + b"\r\ntransfer-encoding: chunked"
    )
    assert seen.body == b"abc"


def test_request_trailers_in_a_later_read_are_dropped_and_the_request_completes(
    proxy_to: ProxyTo,
) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert wait_for(lambda: upstream.heads_received == 1)
    time.sleep(0.1)
    client.send(b"0\r\nCookie: session=admin\r\n\r\n")
    assert client.read_response().body == b"ok"
    (seen,) = upstream.requests
    assert seen.body == b"abc"
    assert seen.header("cookie") == []
    assert client.request(GET).status == 200  # and the connection carries on


def test_response_trailers_never_become_headers(proxy_to: ProxyTo) -> None:
    _, port = proxy_to(
        answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Set-Cookie\r\n\r\n"
            b"2\r\nok\r\n0\r\nSet-Cookie: session=ATTACKER\r\nX-Checksum: 1\r\n\r\n"
        )
    )
    client = RawClient(port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: t-2\r\n\r\n")
    assert client.read_head() == (
        b"HTTP/1.1 200 OK\r\n" + rid("t-2") + b"transfer-encoding: chunked"
    )
    assert client.read_exactly(len(b"2\r\nok\r\n0\r\n\r\n")) == b"2\r\nok\r\n0\r\n\r\n"
    assert client.request(GET).status == 200


# ---- an upstream's response head is bounded ---------------------------------------------------


def many_fields(count: int) -> bytes:
    fields = b"".join(b"X-H%d: v\r\n" % n for n in range(count - 1))
    return b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    ("reply", "served"),
    [
        (many_fields(100), True),
        (many_fields(101), False),
        (many_fields(5000), False),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (65536 - 5 - 14 - 1) + b"\r\n"
            b"Content-Length: 2\r\n\r\nok",
            True,
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (65536 - 5 - 14) + b"\r\n"
            b"Content-Length: 2\r\n\r\nok",
            False,
        ),
    ],
    ids=["100 fields", "101 fields", "5000 fields", "64 KiB of fields", "one byte more"],
)
def test_an_upstream_head_past_its_limits_is_502(
    proxy_to: ProxyTo, reply: bytes, served: bool
) -> None:
    _, port = proxy_to(answer(reply))
    client = RawClient(port)
    got = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: h-1\r\n\r\n")
    if served:
        assert (got.status, got.body) == (200, b"ok")
        return
    assert got.status == 502
    assert json.loads(got.body) == {
        "error": "upstream_unavailable",
        "message": "backend 'up' is unavailable",
        "request_id": "h-1",
    }
    assert got.header("x-h0") == []
    assert client.request(GET).status == 502  # every time; and the gateway stays up


def test_an_endless_upstream_head_is_cut_while_it_arrives(proxy_to: ProxyTo) -> None:
    async def endless(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        for _ in range(40 * 1024):  # 40 MiB, unless the gateway stops reading first
            await exchange.send(line * 16)
            if exchange.writer.is_closing():
                return

    upstream, port = proxy_to(endless)
    reply = RawClient(port, timeout=20).request(GET)
    assert reply.status == 502
    assert wait_for(lambda: upstream.closed_connections == 1)


# ---- statuses that are not statuses ------------------------------------------------------------


@pytest.mark.parametrize("status", [b"999", b"000", b"600", b"099", b"101"])
def test_an_upstream_status_outside_the_final_range_is_502(
    proxy_to: ProxyTo, status: bytes
) -> None:
    async def weird_first(exchange: Exchange) -> None:
        if exchange.request.target == "/weird":
            await exchange.send(b"HTTP/1.1 " + status + b" Weird\r\nContent-Length: 2\r\n\r\nok")
        else:
            await exchange.send(response(body=b"fine"))

    _, port = proxy_to(weird_first)
    client = RawClient(port)
    reply = client.request(b"GET /weird HTTP/1.1\r\nHost: gw\r\nX-Request-Id: s-1\r\n\r\n")
    assert reply.status == 502
    assert json.loads(reply.body)["error"] == "upstream_unavailable"
    assert client.request(GET).body == b"fine"


# ---- upgrade offers are served as plain HTTP/1.1 -----------------------------------------------

H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"


def test_an_h2c_offer_with_a_body_is_served_without_the_upgrade(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port, timeout=5)
    reply = client.request(
        b"POST /up HTTP/1.1\r\nHost: gw\r\n" + H2C + b"Content-Length: 5\r\n\r\nhello"
    )
    assert (reply.status, reply.body) == (200, b"ok")
    (seen,) = upstream.requests
    assert seen.body == b"hello"
    assert [n for n, _ in seen.headers if n in ("upgrade", "connection", "http2-settings")] == []
    assert client.request(GET).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_requests_pipelined_after_an_upgrade_offer_are_answered_in_order(
    proxy_to: ProxyTo, body: bytes
) -> None:
    async def echo(exchange: Exchange) -> None:
        text = exchange.request.target.encode() + b" " + exchange.request.body
        await exchange.send(response(body=text))

    _, port = proxy_to(echo)
    client = RawClient(port, timeout=5)
    client.send(
        b"POST /one HTTP/1.1\r\nHost: gw\r\n"
        + H2C
        + body
        + b"GET /two HTTP/1.1\r\nHost: gw\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
        + b"GET /three HTTP/1.1\r\nHost: gw\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        + b"GET /four HTTP/1.1\r\nHost: gw\r\n\r\n"
    )
    replies = [client.read_response() for _ in range(3)]
    assert [r.body for r in replies] == [b"/one hello", b"/two ", b"/three "]
    # A WebSocket handshake is the connection's last request: answered without a 101, the
    # connection closes, and what was pipelined behind it is never read as a request.
    assert replies[2].header("connection") == ["close"]
    assert client.read_until_closed() == b""


# ---- a client's broken or unsent request never shifts the next one ------------------------------


def test_a_refused_request_with_expect_continue_closes_the_connection(
    proxy_to: ProxyTo,
) -> None:
    # The announced body never comes (the client saw a final answer instead of 100 Continue):
    # on a kept connection its next request would be read as that body.
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(
        b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n"
    )
    reply = client.read_response()
    assert reply.status == 501
    assert reply.header("connection") == ["close"]
    client.send(GET)
    assert client.read_until_closed() == b""
    assert upstream.requests == []


def test_expect_continue_is_answered_when_the_body_is_wanted(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert client.read_head() == b"HTTP/1.1 100 Continue"
    client.send(b"abc")
    assert client.read_response().body == b"ok"
    assert upstream.requests[0].body == b"abc"
    assert upstream.requests[0].header("expect") == []
    assert client.request(GET).status == 200


def test_a_broken_pipelined_request_is_answered_after_the_one_before_it(
    proxy_to: ProxyTo,
) -> None:
    _, port = proxy_to(answer(response(body=b"first")))
    client = RawClient(port)
    client.send(GET + b"GET / HTTP/1.1\r\nHost: gw\r\nX-A : 1\r\n\r\n")
    assert client.read_response().body == b"first"
    refused = client.read_response()
    assert refused.status == 400
    assert json.loads(refused.body)["error"] == "bad_request"
    assert refused.header("connection") == ["close"]
    assert client.read_until_closed() == b""


def test_a_request_after_connection_close_is_not_served(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(b"GET /a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" + GET)
    reply = client.read_response()
    assert (reply.status, reply.header("connection")) == (200, ["close"])
    assert client.read_until_closed() == b""
    assert [r.target for r in upstream.requests] == ["/a"]


# ---- request lines nginx refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n", 505, "http_version_not_supported"),
        # llhttp in strict mode knows 1.0, 1.1 and 2.0 only; a 1.2 is not valid HTTP/1.1.
        (b"GET / HTTP/1.2\r\nHost: gw\r\n\r\n", 400, "bad_request"),
        (b"GET /\r\n\r\n", 400, "bad_request"),
        (b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n\x16\x03\x01", 405, "method_not_allowed"),
    ],
    ids=["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "CONNECT"],
)
def test_request_lines_the_gateway_does_not_serve(
    proxy_to: ProxyTo, request_bytes: bytes, status: int, code: str
) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(request_bytes)
    reply = client.read_response()
    assert reply.status == status
    assert json.loads(reply.body)["error"] == code
    assert reply.header("connection") == ["close"]
    assert client.read_until_closed() == b""
    assert upstream.requests == []


def test_an_http_1_0_client_never_gets_chunked(proxy_to: ProxyTo) -> None:
    async def streamed(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"world"):
            await exchange.send(b"%x\r\n%s\r\n" % (len(part), part))
            await asyncio.sleep(0.05)
        await exchange.send(b"0\r\n\r\n")

    _, port = proxy_to(streamed)
    client = RawClient(port)
    client.send(b"GET / HTTP/1.0\r\nHost: gw\r\nX-Request-Id: old-1\r\n\r\n")
    raw = client.read_until_closed()
    assert raw == b"HTTP/1.1 200 OK\r\n" + rid("old-1") + b"connection: close\r\n\r\nhello world"


# ---- a Host the backend would normalise reaches the route it names -----------------------------


@pytest.fixture
def vhosts(tmp_path: Path, start_upstream: Callable[[Script], RawUpstream]) -> Iterator[HostSetup]:
    """An admin vhost, a wildcard partner vhost and a default backend, each naming itself."""

    def named(name: bytes) -> Script:
        async def script(exchange: Exchange) -> None:
            await exchange.send(response(body=name))

        return script

    admin, partner, default = (start_upstream(named(n)) for n in (b"admin", b"partner", b"default"))
    config = write_table(
        tmp_path / "routes.yaml",
        {
            "admin": f"{{url: '{admin.url}'}}",
            "partner": f"{{url: '{partner.url}'}}",
            "default": f"{{url: '{default.url}'}}",
        },
        "  - {name: admin, match: {path: /, host: Admin.Test}, backend: admin}\n"
        "  - {name: partner, match: {path: /, host: '*.partner.test'}, backend: partner}\n"
        "  - {name: rest, match: {path: /}, backend: default}",
    )
    with running_gateway(config) as (_, servers):
        yield HostSetup(servers.port("gateway"), admin, partner, default)


@dataclass
class HostSetup:
    port: int
    admin: RawUpstream
    partner: RawUpstream
    default: RawUpstream


@pytest.mark.parametrize(
    ("host", "answered_by", "forwarded"),
    [
        (b"admin.test", b"admin", "admin.test"),
        (b"ADMIN.test", b"admin", "admin.test"),
        (b"admin.test.", b"admin", "admin.test"),
        (b"admin.test:8080", b"admin", "admin.test:8080"),
        (b"Admin.Test.:80", b"admin", "admin.test:80"),
        (b"www.partner.test", b"partner", "www.partner.test"),
        (b"other.test", b"default", "other.test"),
    ],
)
def test_every_spelling_of_a_host_reaches_its_route_as_the_normal_form(
    vhosts: HostSetup, host: bytes, answered_by: bytes, forwarded: str
) -> None:
    reply = RawClient(vhosts.port).request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert (reply.status, reply.body) == (200, answered_by)
    upstream = {b"admin": vhosts.admin, b"partner": vhosts.partner, b"default": vhosts.default}
    (seen,) = upstream[answered_by].requests
    assert seen.header("host") == [forwarded]
    assert seen.header("x-forwarded-host") == [forwarded]


@pytest.mark.parametrize(
    "host",
    [
        b"admin.test:80:80",
        b"x, admin.test",
        b"ad min.test",
        b"admin.test/x",
        b"",
        b"evil.test/.partner.test",
        b"evil.test#.partner.test",
        b"evil.test@.partner.test",
        b"[::1",
    ],
)
def test_an_invalid_host_is_400_and_reaches_no_backend(vhosts: HostSetup, host: bytes) -> None:
    client = RawClient(vhosts.port)
    reply = client.request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-Request-Id: h-2\r\n\r\n")
    assert reply.status == 400
    body = json.loads(reply.body)
    assert body["error"] == "bad_request"
    assert body["message"].startswith("bad Host: ")
    assert vhosts.admin.requests == vhosts.partner.requests == vhosts.default.requests == []
    assert client.request(b"GET / HTTP/1.1\r\nHost: admin.test\r\n\r\n").body == b"admin"


# ---- Connection removes only what may be hop-by-hop ---------------------------------------------


def test_connection_cannot_remove_what_the_gateway_routed_on_or_the_request_carries(
    vhosts: HostSetup,
) -> None:
    reply = RawClient(vhosts.port).request(
        b"POST / HTTP/1.1\r\nHost: admin.test\r\n"
        b"Connection: host, content-length, cookie, authorization, x-forwarded-for, x-hop\r\n"
        b"Cookie: session=u1\r\nAuthorization: Bearer t\r\nX-Hop: 1\r\nX-Kept: 2\r\n"
        b"Content-Length: 05\r\n\r\nhello"
    )
    assert reply.body == b"admin"
    (seen,) = vhosts.admin.requests
    assert seen.headers[:5] == [
        ("host", "admin.test"),
        ("cookie", "session=u1"),
        ("authorization", "Bearer t"),
        ("x-kept", "2"),
        ("content-length", "5"),
    ]
    assert seen.header("x-hop") == []  # a field that may be hop-by-hop is removed
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]
    assert seen.body == b"hello"


def test_trace_is_405(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    reply = RawClient(port).request(b"TRACE / HTTP/1.1\r\nHost: gw\r\nCookie: s=1\r\n\r\n")
    assert reply.status == 405
    assert json.loads(reply.body)["error"] == "method_not_allowed"
    assert upstream.requests == []


# ---- function backends: the slot before the body, and the body within the deadline ------------


def function_gateway(
    tmp_path: Path, spec: str
) -> contextlib.AbstractContextManager[tuple[Application, ThreadedServers]]:
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"version: 1\nbackends: {{fn: {{function: 'tests.functions:{spec}}}}}\n"
        "routes: [{name: all, match: {path: /}, backend: fn}]\n"
    )
    return running_gateway(config)


def readable(sock: socket.socket) -> bool:
    """Whether bytes (or the end) wait on ``sock``; poll, as select() cannot take an fd past
    1023 and a long test run opens many."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def test_a_trickled_body_to_a_function_ends_at_its_timeout(tmp_path: Path) -> None:
    with function_gateway(tmp_path, "echo', timeout: 1s") as (_, servers):
        client = RawClient(servers.port("gateway"), timeout=10)
        client.send(
            b"POST / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: slow-1\r\nContent-Length: 100\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            for _ in range(100):  # a byte every 0.3 s: 30 s in all, within any idle timeout
                client.send(b"x")
                time.sleep(0.3)
                if readable(client.sock):
                    break
        reply = client.read_response()
        assert reply.status == 408
        assert json.loads(reply.body) == {
            "error": "request_timeout",
            "message": "the request body did not arrive within 1s",
            "request_id": "slow-1",
        }
        assert reply.header("connection") == ["close"]


def test_uploads_to_a_function_take_their_slot_before_their_body(tmp_path: Path) -> None:
    with function_gateway(tmp_path, "echo', max_concurrency: 4, timeout: 20s") as (_, servers):
        port = servers.port("gateway")
        head = b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 65536\r\n\r\n"
        held = []
        for _ in range(4):  # each holds back its last byte
            client = RawClient(port)
            client.send(head + b"x" * 65535)
            held.append(client)
        # Every slot is taken by a body still arriving: the next upload is refused at once,
        # before a byte of it is buffered.
        extra = RawClient(port)
        extra.send(head + b"x" * 65535)
        refused = extra.read_response()
        assert refused.status == 503
        assert json.loads(refused.body)["error"] == "overloaded"
        for client in held:
            client.send(b"x")
        assert [json.loads(c.read_response().body)["event"]["body"] for c in held] == [
            base64.b64encode(b"x" * 65536).decode()
        ] * 4


def test_a_function_answering_1xx_is_502_and_the_connection_carries_on(tmp_path: Path) -> None:
    with function_gateway(tmp_path, "interim_status'") as (_, servers):
        client = RawClient(servers.port("gateway"))
        client.send(GET + GET)
        for _ in range(2):
            reply = client.read_response()
            assert reply.status == 502
            assert json.loads(reply.body)["error"] == "bad_function_response"


@pytest.mark.parametrize(
    ("limits", "status"),
    [
        ("max_response_headers: 3", 200),
        ("max_response_headers: 2", 502),
        ("max_response_header_bytes: 19", 200),  # "A1", "B2", "Content-Length2"
        ("max_response_header_bytes: 18", 502),
    ],
)
def test_a_backend_sets_its_own_response_head_limits(
    proxy_to: ProxyTo, limits: str, status: int
) -> None:
    _, port = proxy_to(
        answer(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 2\r\n\r\nok"),
        extra=f", {limits}",
    )
    assert RawClient(port).request(GET).status == status
