"""Byte-exact HTTP forwarding over real sockets (docs/forwarding.md): a raw client, the gateway
on uvicorn, and a raw upstream that records what arrived and answers with a script."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ProxyTo
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    Recorded,
    answer,
    response,
    running_gateway,
    wait_for,
    write_table,
)

pytestmark = pytest.mark.sockets

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
ALL_BYTES = bytes(range(256)) * 4


NEW_TRACE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01\Z")


def forwarding_headers(
    request_id: str, host: str = "gw", *, seen: Recorded
) -> list[tuple[str, str]]:
    """What the gateway adds, in order; the traceparent of a new trace (the client sent none)
    is taken from what the upstream ``seen``, once its form is checked."""
    (traceparent,) = seen.header("traceparent")
    assert NEW_TRACE.match(traceparent)
    return [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", host),
        ("via", "1.1 strangler"),
        ("x-request-id", request_id),
        ("traceparent", traceparent),
    ]


def test_a_minimal_request_arrives_with_nothing_injected(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"hi")))
    reply = RawClient(port).request(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 200
    (seen,) = upstream.requests
    request_id = reply.header("x-request-id")[0]
    assert UUID.match(request_id)
    assert seen.request_line == "GET /x HTTP/1.1"
    # No User-Agent, Accept, Accept-Encoding or Connection of the client library's own.
    assert seen.headers == [("host", "gw"), *forwarding_headers(request_id, seen=seen)]
    assert seen.body == b""


def test_request_headers_and_body_arrive_byte_exact(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    request = (
        b"POST /submit?b=2&a=1&a=%7E&x=y+z&&empty= HTTP/1.1\r\n"
        b"Host: shop.example\r\n"
        b"X-Multi: one\r\n"
        b"Cookie: session_id=abc; theme=dark\r\n"
        b"X-Multi: two, three\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"X-Odd-Value:  spaced\tvalue \xe9\r\n"
        b"Content-Length: 1024\r\n"
        b"\r\n" + ALL_BYTES
    )
    reply = RawClient(port).request(request)
    assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.request_line == "POST /submit?b=2&a=1&a=%7E&x=y+z&&empty= HTTP/1.1"
    assert seen.body == ALL_BYTES
    assert seen.headers == [
        ("host", "shop.example"),
        ("x-multi", "one"),
        ("cookie", "session_id=abc; theme=dark"),
        ("x-multi", "two, three"),
        ("content-type", "application/octet-stream"),
        ("x-odd-value", "spaced\tvalue \xe9"),
        ("content-length", "1024"),
        *forwarding_headers(reply.header("x-request-id")[0], host="shop.example", seen=seen),
    ]


def test_response_headers_and_body_reach_the_client_byte_exact(proxy_to: ProxyTo) -> None:
    body = ALL_BYTES
    upstream_reply = (
        b"HTTP/1.1 201 Created\r\n"
        b"Set-Cookie: session_id=s1; Path=/; HttpOnly\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Set-Cookie: csrf=c1; Path=/; SameSite=Strict\r\n"
        b"X-Custom: a,  b\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
        b"Server: legacy/1.0\r\n"
        b"Content-Length: 1024\r\n\r\n" + body
    )
    _, port = proxy_to(answer(upstream_reply))
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 201
    assert reply.body == body
    assert reply.headers == [
        ("set-cookie", "session_id=s1; Path=/; HttpOnly"),
        ("content-type", "application/octet-stream"),
        ("set-cookie", "csrf=c1; Path=/; SameSite=Strict"),
        ("x-custom", "a,  b"),
        ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("server", "legacy/1.0"),
        ("content-length", "1024"),
        ("x-request-id", reply.header("x-request-id")[0]),
    ]


def test_gzip_passes_through_undecoded(proxy_to: ProxyTo) -> None:
    compressed = gzip.compress(b'{"items": []}' * 100, mtime=0)
    upstream, port = proxy_to(
        answer(
            response(
                headers=[
                    ("Content-Encoding", "gzip"),
                    ("Vary", "Accept-Encoding"),
                    ("Content-Length", str(len(compressed))),
                ],
                body=compressed,
            )
        )
    )
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: gzip\r\n\r\n")
    assert reply.header("content-encoding") == ["gzip"]
    assert reply.header("content-length") == [str(len(compressed))]
    assert reply.body == compressed
    assert upstream.requests[0].header("accept-encoding") == ["gzip"]


def test_chunked_upstream_body_is_streamed_and_reframed(proxy_to: ProxyTo) -> None:
    release = threading.Event()

    async def script(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await asyncio.to_thread(release.wait, 10)
        await exchange.send(b"6\r\nsecond\r\n0\r\n\r\n")

    _, port = proxy_to(script)
    client = RawClient(port)
    client.send(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
    head = client.read_head()
    assert b"transfer-encoding: chunked" in head
    # The first chunk arrives while the upstream is still holding back the rest.
    assert client.read_exactly(len(b"5\r\nfirst\r\n")) == b"5\r\nfirst\r\n"
    assert not release.is_set()
    release.set()
    assert client.read_exactly(len(b"6\r\nsecond\r\n0\r\n\r\n")) == b"6\r\nsecond\r\n0\r\n\r\n"


def test_request_body_is_streamed_before_it_ends(proxy_to: ProxyTo) -> None:
    async def script(exchange: Exchange) -> None:
        digest = hashlib.sha256(exchange.request.body).hexdigest().encode()
        await exchange.send(response(body=digest))

    upstream, port = proxy_to(script)
    client = RawClient(port)
    client.send(b"PUT /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"4\r\nabcd\r\n")
    # The first chunk reaches the upstream while the client has not finished its body.
    assert wait_for(lambda: upstream.body_bytes_received == 4)
    assert upstream.requests == []
    client.send(b"3\r\nefg\r\n0\r\n\r\n")
    reply = client.read_response()
    assert reply.body == hashlib.sha256(b"abcdefg").hexdigest().encode()
    assert upstream.requests[0].header("transfer-encoding") == ["chunked"]
    assert upstream.requests[0].header("content-length") == []


def test_large_body_both_ways_is_intact(proxy_to: ProxyTo) -> None:
    payload = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)

    async def script(exchange: Exchange) -> None:
        await exchange.send(response(body=exchange.request.body[::-1]))

    upstream, port = proxy_to(script)
    client = RawClient(port, timeout=30)
    reply = client.request(
        b"POST /big HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
    )
    assert upstream.requests[0].body == payload
    assert reply.body == payload[::-1]


def test_cookies_never_leak_between_clients(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(
            response(
                headers=[("Set-Cookie", "session_id=alice-secret; Path=/"), ("Content-Length", "0")]
            )
        )
    )
    alice = RawClient(port).request(b"GET /login HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert alice.header("set-cookie") == ["session_id=alice-secret; Path=/"]
    RawClient(port).request(b"GET /me HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert upstream.requests[1].header("cookie") == []


def test_hop_by_hop_headers_are_stripped_both_ways(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(
            response(
                headers=[
                    ("Connection", "close, X-Internal"),
                    ("X-Internal", "upstream-only"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Authenticate", "Basic"),
                    ("Trailer", "X-Checksum"),
                    ("Upgrade", "h2c"),
                    ("X-Kept", "yes"),
                    ("Content-Length", "2"),
                ],
                body=b"ok",
            )
        )
    )
    client = RawClient(port)
    reply = client.request(
        b"GET / HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: keep-alive, X-Secret\r\n"
        b"X-Secret: client-only\r\n"
        b"Keep-Alive: 300\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: websocket\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"X-Kept: yes\r\n\r\n"
    )
    (seen,) = upstream.requests
    names = [name for name, _ in seen.headers]
    for name in (
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert name not in names
    assert seen.header("x-kept") == ["yes"]
    assert [name for name, _ in reply.headers] == ["x-kept", "content-length", "x-request-id"]
    # The upstream's "Connection: close" was about its own hop: the client's connection stays.
    second = client.request(b"GET /again HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert second.status == 200


def test_header_names_with_underscores_are_dropped(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    RawClient(port).request(
        b"GET / HTTP/1.1\r\nHost: gw\r\nX_Forwarded_For: 6.6.6.6\r\nX_User: admin\r\n"
        b"X-Kept: 1\r\n\r\n"
    )
    (seen,) = upstream.requests
    assert [name for name, _ in seen.headers if "_" in name] == []
    assert seen.header("x-kept") == ["1"]
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]


def test_forwarding_headers_replace_what_the_client_claims(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    reply = RawClient(port).request(
        b"GET / HTTP/1.1\r\nHost: gw:8080\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil.example\r\n"
        b"Via: 1.1 corporate-proxy\r\n"
        b"X-Request-Id: client-chosen-id.42\r\n\r\n"
    )
    (seen,) = upstream.requests
    assert reply.header("x-request-id") == ["client-chosen-id.42"]
    assert seen.headers == [
        ("host", "gw:8080"),
        ("via", "1.1 corporate-proxy"),
        *forwarding_headers("client-chosen-id.42", host="gw:8080", seen=seen),
    ]


@pytest.mark.parametrize("bad_id", [b"has space", b"x" * 129, b"semi;colon", b""])
def test_an_invalid_request_id_is_replaced(proxy_to: ProxyTo, bad_id: bytes) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    reply = RawClient(port).request(
        b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: " + bad_id + b"\r\n\r\n"
    )
    request_id = reply.header("x-request-id")[0]
    assert UUID.match(request_id)
    assert upstream.requests[0].header("x-request-id") == [request_id]


def test_upstream_request_id_is_replaced_by_the_gateways(proxy_to: ProxyTo) -> None:
    _, port = proxy_to(
        answer(response(headers=[("X-Request-Id", "upstream-own"), ("Content-Length", "0")]))
    )
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: mine\r\n\r\n")
    assert reply.header("x-request-id") == ["mine"]


def test_base_path_and_query_are_joined_exactly(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")), base="/legacy/")
    client = RawClient(port)
    client.request(b"GET /a/b?q=%2F%zz&x=a/b?c;d HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.request(b"GET /a/../%7Ec/./d//e HTTP/1.1\r\nHost: gw\r\n\r\n")
    targets = [r.target for r in upstream.requests]
    assert targets == ["/legacy/a/b?q=%2F%zz&x=a/b?c;d", "/legacy/", "/legacy/~c/d/e"]


def test_the_request_target_cannot_choose_another_host(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    client = RawClient(port)
    client.request(b"GET http://evil.example/steal?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.request(b"GET //evil.example/steal HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.request(b"GET /%2e%2e/%2e%2e//evil.example/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert [r.target for r in upstream.requests] == [
        "/steal?x=1",
        "/evil.example/steal",
        "/evil.example/x",
    ]
    assert all(r.connection == 1 for r in upstream.requests)


def test_head_keeps_content_length_and_sends_no_body(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(response(headers=[("Content-Length", "1234"), ("Content-Type", "text/html")]))
    )
    client = RawClient(port)
    reply = client.request(b"HEAD /page HTTP/1.1\r\nHost: gw\r\n\r\n", method="HEAD")
    assert reply.header("content-length") == ["1234"]
    # No stray body bytes: the next response on the same connection parses cleanly.
    second = client.request(b"HEAD /page HTTP/1.1\r\nHost: gw\r\n\r\n", method="HEAD")
    assert second.status == 200
    assert [r.request_line for r in upstream.requests] == ["HEAD /page HTTP/1.1"] * 2


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("204 No Content", []),
        ("304 Not Modified", [("ETag", '"v1"'), ("Content-Length", "120")]),
    ],
)
def test_bodiless_statuses_are_framed_correctly(
    proxy_to: ProxyTo, status: str, headers: list[tuple[str, str]]
) -> None:
    _, port = proxy_to(answer(response(status, headers=headers)))
    client = RawClient(port)
    reply = client.request(b'GET /x HTTP/1.1\r\nHost: gw\r\nIf-None-Match: "v1"\r\n\r\n')
    assert reply.status == int(status.split()[0])
    assert reply.header("transfer-encoding") == []
    assert reply.header("content-length") == []
    if headers:
        assert reply.header("etag") == ['"v1"']
    assert client.request(b"GET /y HTTP/1.1\r\nHost: gw\r\n\r\n").status == reply.status


def test_keep_alive_connections_are_reused_upstream(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"x")))
    for _ in range(3):
        RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    client = RawClient(port)
    for _ in range(3):
        client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert len(upstream.requests) == 6
    assert upstream.connections == 1


def test_an_idle_connection_the_upstream_closed_is_not_reused(proxy_to: ProxyTo) -> None:
    async def answer_then_close(exchange: Exchange) -> None:
        await exchange.send(response(body=b"x"))
        exchange.close()  # as an upstream's keep-alive timeout does, without saying so

    upstream, port = proxy_to(answer_then_close)
    client = RawClient(port)
    for _ in range(3):
        assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"x"
        assert wait_for(lambda: upstream.closed_connections == upstream.connections)
    assert upstream.connections == 3


def test_a_reused_connection_closed_before_answering_is_retried_once_if_replayable(
    proxy_to: ProxyTo,
) -> None:
    # The race every pool has: the upstream closes an idle connection just as it is reused.
    # Here every connection's second request is met by a close without an answer.
    async def close_second(exchange: Exchange) -> None:
        mine = [r for r in upstream.requests if r.connection == exchange.request.connection]
        if len(mine) == 2:
            exchange.close()
        else:
            await exchange.send(response(body=b"x"))

    upstream, port = proxy_to(close_second)
    client = RawClient(port)
    for _ in range(3):
        assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"x"
    assert [r.connection for r in upstream.requests] == [1, 1, 2, 2, 3]
    # A request with a body is not sent twice: it may have been acted on.
    reply = client.request(b"PUT / HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n\r\nz")
    assert reply.status == 502
    assert [r.connection for r in upstream.requests][-1] == 3


def test_an_upstream_answering_before_the_upload_ends_is_heard(tmp_path: Path) -> None:
    """An upstream that refuses an upload after its first bytes (413, then closes): the client
    gets that 413, not a 502 for the write that failed after it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(65536)
            connection.recv(65536)  # some of the body, not all of it
            connection.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n"
                b"Connection: close\r\n\r\ntoo big!"
            )
            connection.shutdown(socket.SHUT_WR)
            time.sleep(0.2)  # then close with the rest unread: the gateway's writes fail

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    config = write_table(
        tmp_path / "routes.yaml", {"up": f"{{url: 'http://127.0.0.1:{listener.getsockname()[1]}'}}"}
    )
    size = 16 * 1024 * 1024
    with running_gateway(config) as (_, servers):
        client = socket.create_connection(("127.0.0.1", servers.port("gateway")), timeout=10)
        client.sendall(b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
        sender = threading.Thread(target=_send_zeros, args=(client, size), daemon=True)
        sender.start()
        answer_bytes = b""
        while b"too big!" not in answer_bytes:
            data = client.recv(65536)
            assert data, answer_bytes
            answer_bytes += data
        client.close()
    thread.join(5)
    listener.close()
    assert answer_bytes.startswith(b"HTTP/1.1 413 ")
    assert answer_bytes.endswith(b"\r\n\r\ntoo big!")


def _send_zeros(sock: socket.socket, size: int) -> None:
    chunk = bytes(65536)
    try:
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
    except OSError:
        pass


def test_interim_responses_from_the_upstream_are_not_passed_on(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
        )
    )
    client = RawClient(port)
    for _ in range(2):
        reply = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (reply.status, reply.body, reply.header("link")) == (200, b"final", [])
    assert upstream.connections == 1


def test_a_body_ended_by_closing_the_connection_arrives_whole(proxy_to: ProxyTo) -> None:
    async def until_close(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(5):
            await exchange.send(b"0123456789")
            await asyncio.sleep(0.01)
        exchange.close()

    upstream, port = proxy_to(until_close)
    client = RawClient(port)
    reply = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert (reply.status, reply.body) == (200, b"0123456789" * 5)
    assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"0123456789" * 5
    assert upstream.connections == 2


def test_expect_100_continue_is_answered_by_the_gateway(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"stored")))
    client = RawClient(port)
    client.send(b"PUT /f HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert client.read_head() == b"HTTP/1.1 100 Continue"
    client.send(b"hello")
    reply = client.read_response()
    assert reply.body == b"stored"
    assert upstream.requests[0].body == b"hello"
    assert upstream.requests[0].header("expect") == []


# ---- failures --------------------------------------------------------------------------------


def error_json(reply_body: bytes) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(reply_body)
    return parsed


def test_refused_connection_is_502_upstream_unavailable(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(b""))
    upstream.stop()
    client = RawClient(port)
    reply = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-1\r\n\r\n")
    assert reply.status == 502
    assert reply.header("content-type") == ["application/json"]
    assert error_json(reply.body) == {
        "error": "upstream_unavailable",
        "message": "backend 'up' is unavailable",
        "request_id": "r-1",
    }
    # The gateway is still there and the connection still usable.
    assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").status == 502


def test_silent_upstream_is_504_after_the_backend_timeout(proxy_to: ProxyTo) -> None:
    async def hang(exchange: Exchange) -> None:
        await asyncio.sleep(30)

    _, port = proxy_to(hang, extra=", timeout: 300ms")
    started = time.monotonic()
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-2\r\n\r\n")
    elapsed = time.monotonic() - started
    assert reply.status == 504
    assert error_json(reply.body) == {
        "error": "upstream_timeout",
        "message": "backend 'up' did not answer within 0.3s",
        "request_id": "r-2",
    }
    assert elapsed < 5  # bounded by the timeout, not by the upstream's 30 s


def test_timeout_mid_body_aborts_the_client_connection(proxy_to: ProxyTo) -> None:
    async def stall(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await asyncio.sleep(30)

    _, port = proxy_to(stall, extra=", timeout: 300ms")
    client = RawClient(port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 200 OK")
    rest = client.read_until_closed()
    assert rest == b"0123456789"  # 10 of 100 bytes, then the connection closes


@pytest.mark.parametrize("how", ["close", "reset"])
def test_upstream_failing_mid_body_aborts_the_client_connection(
    proxy_to: ProxyTo, how: str
) -> None:
    async def die(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.sleep(0.05)
        exchange.close() if how == "close" else exchange.reset()

    _, port = proxy_to(die)
    client = RawClient(port)
    client.send(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.read_head()
    rest = client.read_until_closed()
    # The chunk that arrived, and no terminating zero-size chunk: the client can tell.
    assert rest == b"5\r\nhello\r\n"


def test_client_disconnect_before_the_answer_abandons_the_upstream_request(
    proxy_to: ProxyTo,
) -> None:
    async def slow(exchange: Exchange) -> None:
        # Never answers; returns when the gateway closes the connection (read gives b"").
        await asyncio.wait_for(exchange.reader.read(1), 30)

    upstream, port = proxy_to(slow)
    client = RawClient(port)
    client.send(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert wait_for(lambda: len(upstream.requests) == 1)
    client.close()
    # The gateway closes its upstream connection instead of waiting 30 s for nobody.
    assert wait_for(lambda: upstream.closed_connections == 1, timeout=5)


def test_client_disconnect_mid_stream_abandons_the_upstream_request(proxy_to: ProxyTo) -> None:
    async def endless(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3000):
            await exchange.send(b"5\r\nchunk\r\n")
            await asyncio.sleep(0.01)

    upstream, port = proxy_to(endless)
    client = RawClient(port)
    client.send(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
    client.read_head()
    client.read_exactly(20)
    client.close()
    assert wait_for(lambda: upstream.closed_connections == 1, timeout=5)


def test_the_gateway_survives_failures_and_serves_the_next_request(proxy_to: ProxyTo) -> None:
    calls = {"n": 0}

    async def flaky(exchange: Exchange) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            exchange.reset()
        else:
            await exchange.send(response(body=b"fine"))

    _, port = proxy_to(flaky)
    assert RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").status == 502
    assert RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"fine"


# ---- what the gateway answers itself ------------------------------------------------------------


def test_unmatched_request_is_404_no_route(tmp_path: Path) -> None:
    upstream = RawUpstream(answer(response(body=b"only"))).start()
    try:
        config = write_table(
            tmp_path / "routes.yaml",
            {"up": f"{{url: '{upstream.url}'}}"},
            "  - {name: only, match: {path: /only, methods: [GET]}, backend: up}",
        )
        with running_gateway(config) as (_, servers):
            client = RawClient(servers.port("gateway"))
            reply = client.request(b"GET /other HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-5\r\n\r\n")
            assert reply.status == 404
            assert reply.headers == [
                ("content-type", "application/json"),
                ("content-length", str(len(reply.body))),
                ("x-request-id", "r-5"),
                ("cache-control", "no-store"),
            ]
            assert reply.body == (
                b'{"error":"no_route","message":"no route matches GET /other","request_id":"r-5"}'
            )
            reply = client.request(b"POST /only HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
            assert reply.status == 404
            assert client.request(b"GET /only/x HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"only"
            assert [r.target for r in upstream.requests] == ["/only/x"]
    finally:
        upstream.stop()


def test_connect_timeout_is_502_upstream_unavailable(tmp_path: Path) -> None:
    # A listener that never accepts, with its backlog full: further SYNs are dropped, so a
    # connect neither succeeds nor is refused.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        config = write_table(
            tmp_path / "routes.yaml",
            {"up": f"{{url: 'http://127.0.0.1:{port}', connect_timeout: 200ms, timeout: 20s}}"},
        )
        with running_gateway(config) as (_, servers):
            started = time.monotonic()
            reply = RawClient(servers.port("gateway")).request(
                b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-6\r\n\r\n"
            )
            assert time.monotonic() - started < 5
            assert reply.status == 502
            assert error_json(reply.body) == {
                "error": "upstream_unavailable",
                "message": "backend 'up' is unavailable",
                "request_id": "r-6",
            }
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (b"/a%2Fb", "bad path: encoded '/' or '\\\\' in the path is not allowed"),
        (b"/..;/admin", "bad path: an empty or dot segment with ';' parameters is not allowed"),
        (b"/a%00b", "bad path: encoded control characters in the path are not allowed"),
    ],
)
def test_refused_paths_are_400_and_never_forwarded(
    proxy_to: ProxyTo, target: bytes, message: str
) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    client = RawClient(port)
    reply = client.request(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-3\r\n\r\n")
    assert reply.status == 400
    assert reply.body == (
        b'{"error":"bad_request","message":"' + message.encode() + b'","request_id":"r-3"}'
    )
    assert upstream.requests == []
    assert client.request(b"GET /ok HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200


def test_missing_or_repeated_host_is_400(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nX-Request-Id: r-4\r\n\r\n")
    assert reply.status == 400
    assert error_json(reply.body)["message"] == "an HTTP/1.1 request must carry a Host header"
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert reply.status == 400
    assert error_json(reply.body)["message"] == "more than one Host header"
    assert upstream.requests == []


def test_a_hung_backend_is_bounded_and_does_not_slow_the_others(tmp_path: Path) -> None:
    async def hang(exchange: Exchange) -> None:
        await asyncio.wait_for(exchange.reader.read(1), 30)

    hung = RawUpstream(hang).start()
    healthy = RawUpstream(answer(response(body=b"fine"))).start()
    try:
        config = write_table(
            tmp_path / "routes.yaml",
            {
                "hung": f"{{url: '{hung.url}', max_concurrency: 2}}",
                "ok": f"{{url: '{healthy.url}'}}",
            },
            "  - {name: hung, match: {path: /hung}, backend: hung}\n"
            "  - {name: ok, match: {path: /}, backend: ok}",
        )
        with running_gateway(config) as (_, servers):
            port = servers.port("gateway")
            stuck = [RawClient(port) for _ in range(2)]
            for client in stuck:
                client.send(b"GET /hung HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert wait_for(lambda: hung.heads_received == 2)
            refused = RawClient(port).request(
                b"GET /hung HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-7\r\n\r\n"
            )
            assert refused.status == 503
            assert error_json(refused.body) == {
                "error": "overloaded",
                "message": "backend 'hung' is at its limit of 2",
                "request_id": "r-7",
            }
            assert hung.heads_received == 2  # the third never reached the hung upstream
            for _ in range(20):
                assert (
                    RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"fine"
                )
            for client in stuck:
                client.close()
    finally:
        hung.stop()
        healthy.stop()


def test_behind_a_trusted_proxy_its_forwarding_headers_are_kept(tmp_path: Path) -> None:
    upstream = RawUpstream(answer(response(body=b""))).start()
    try:
        config = write_table(tmp_path / "routes.yaml", {"up": f"{{url: '{upstream.url}'}}"})
        with running_gateway(config, trusted_proxies=("127.0.0.0/8",)) as (_, servers):
            RawClient(servers.port("gateway")).request(
                b"GET / HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 198.51.100.7\r\n"
                b"X-Forwarded-Proto: https\r\nForwarded: for=198.51.100.7;proto=https\r\n\r\n"
            )
        (seen,) = upstream.requests
        assert seen.header("x-forwarded-for") == ["198.51.100.7, 127.0.0.1"]
        assert seen.header("x-forwarded-proto") == ["https"]
        assert seen.header("forwarded") == ["for=198.51.100.7;proto=https"]
    finally:
        upstream.stop()


def test_without_trusted_proxies_forwarded_claims_are_dropped(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(response(body=b"")))
    RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\nForwarded: for=6.6.6.6\r\n\r\n")
    assert upstream.requests[0].header("forwarded") == []
