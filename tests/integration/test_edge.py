"""Hostile input at the edge, over real sockets: smuggling attempts the HTTP parser refuses,
and the limits the gateway enforces. Each case checks the exact answer, that the upstream saw
nothing, and that the next client is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

from proxy.settings import Limits
from tests.integration.conftest import ProxyTo
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    answer,
    response,
    running_gateway,
    serve_process,
    wait_for,
    write_table,
)

pytestmark = pytest.mark.sockets

SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "two content-lengths": (
        b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
    ),
    "signed content-length": b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\nabcd",
    "chunked not last": (
        b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "obfuscated transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold": b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n  folded\r\n\r\n",
    "control byte in a header": b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: a\x01b\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost: gw\r\nX-A : 1\r\n\r\n",
    "bare LF line endings": b"GET / HTTP/1.1\nHost: gw\n\n",
}


@pytest.mark.parametrize("case", list(SMUGGLING), ids=list(SMUGGLING))
def test_smuggling_attempts_are_refused_by_the_parser(proxy_to: ProxyTo, case: str) -> None:
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    client.send(SMUGGLING[case])
    reply = client.read_response()
    assert reply.status == 400
    assert reply.header("connection") == ["close"]
    assert client.read_until_closed() == b""  # and the connection is closed
    assert upstream.requests == []
    assert RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"ok"


def many_headers(count: int) -> bytes:
    """A request with ``count`` header fields, Host included."""
    return (
        b"GET / HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(count - 1))
        + b"\r\n"
    )


def big_header(size: int) -> bytes:
    """A request whose header names and values total ``size`` bytes."""
    filler = size - len(b"hostgwx-big")
    return b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * filler + b"\r\n\r\n"


def target(length: int) -> bytes:
    """A request whose path and query are ``length`` bytes."""
    return b"GET /" + b"a" * (length - 1) + b" HTTP/1.1\r\nHost: gw\r\n\r\n"


# Each case: the request at the limit (served) and one past it (refused).
LIMITS = {
    "too many headers": (
        many_headers(100),
        many_headers(101),
        431,
        {"error": "headers_too_large", "message": "more than 100 header fields"},
    ),
    "headers too large": (
        big_header(65536),
        big_header(65537),
        431,
        {"error": "headers_too_large", "message": "header fields larger than 65536 bytes"},
    ),
    "request target too long": (
        target(8192),
        target(8193),
        414,
        {"error": "uri_too_long", "message": "the request target is longer than 8192 bytes"},
    ),
}


@pytest.mark.parametrize("case", list(LIMITS), ids=list(LIMITS))
def test_limits_are_enforced_before_forwarding(proxy_to: ProxyTo, case: str) -> None:
    at_limit, past_limit, status, body = LIMITS[case]
    upstream, port = proxy_to(answer(response(body=b"ok")))
    client = RawClient(port)
    reply = client.request(past_limit)
    assert reply.status == status
    parsed = json.loads(reply.body)
    assert {k: parsed[k] for k in ("error", "message")} == body
    assert upstream.requests == []
    # Exactly at the limit is still served, on the same connection.
    assert client.request(at_limit).status == 200
    assert len(upstream.requests) == 1


def test_bytes_past_a_response_never_reach_the_next_request(proxy_to: ProxyTo) -> None:
    # The upstream's Content-Length says 2, then it sends a whole second response: left in a
    # pooled connection, "secret" would be read as the next request's answer.
    upstream, port = proxy_to(
        answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"
        )
    )
    for _ in range(3):
        reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"ok")
    assert upstream.connections == 3  # each overrun connection was discarded, never reused


def test_a_body_on_a_204_does_not_break_the_next_request(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(answer(b"HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nsecret"))
    for _ in range(3):
        assert RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").status == 204
    assert upstream.connections == 3


def test_bytes_arriving_after_a_head_response_never_reach_the_next_request(
    proxy_to: ProxyTo,
) -> None:
    # The body of a HEAD response, sent late: the connection has gone back to the pool by then.
    async def late_body(exchange: Exchange) -> None:
        if exchange.request.request_line.startswith("HEAD"):
            await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
            await asyncio.sleep(0.3)
            await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        else:
            await exchange.send(response(body=b"yours"))

    upstream, port = proxy_to(late_body)
    client = RawClient(port)
    head = client.request(b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n", "HEAD")
    assert (head.status, head.header("content-length"), head.body) == (200, ["20"], b"")
    time.sleep(0.6)
    for _ in range(3):
        reply = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"yours")
    # The connection that received the late bytes was dropped from the pool, not reused.
    assert upstream.requests[1].connection != upstream.requests[0].connection


GARBAGE = {
    "not http at all": b"SSH-2.0-OpenSSH_9.2\r\n",
    "a bad status line": b"HTTP/1.1 two hundred OK\r\nContent-Length: 0\r\n\r\n",
    "a header without a colon": b"HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok",
    "a bad content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
    "a head cut off": b"HTTP/1.1 200 OK\r\nContent-Le",
}


@pytest.mark.parametrize("case", list(GARBAGE), ids=list(GARBAGE))
def test_a_garbage_response_is_502_and_the_next_request_is_served(
    proxy_to: ProxyTo, case: str
) -> None:
    async def garbage_first(exchange: Exchange) -> None:
        if exchange.request.target == "/garbage":
            await exchange.send(GARBAGE[case])
            exchange.close()
        else:
            await exchange.send(response(body=b"fine"))

    _, port = proxy_to(garbage_first)
    client = RawClient(port)
    reply = client.request(b"GET /garbage HTTP/1.1\r\nHost: gw\r\nX-Request-Id: g-1\r\n\r\n")
    assert reply.status == 502
    assert json.loads(reply.body) == {
        "error": "upstream_unavailable",
        "message": "backend 'up' is unavailable",
        "request_id": "g-1",
    }
    assert client.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"fine"


def test_an_upstream_head_trickling_in_is_504_at_the_backend_timeout(proxy_to: ProxyTo) -> None:
    async def trickle(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\n")
        for number in range(300):  # 30 s, past the client's own 10 s timeout
            await exchange.send(b"X-Slow-%d: 1\r\n" % number)
            await asyncio.sleep(0.1)

    upstream, port = proxy_to(trickle, extra=", timeout: 500ms")
    # Each header arrives well within any read timeout: only the whole-exchange deadline ends
    # it (a gateway without one would leave this client waiting past its own timeout).
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 504
    assert json.loads(reply.body)["error"] == "upstream_timeout"
    assert wait_for(lambda: upstream.closed_connections == 1)


def test_a_response_with_content_length_and_transfer_encoding_is_502(proxy_to: ProxyTo) -> None:
    upstream, port = proxy_to(
        answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    )
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-8\r\n\r\n")
    assert reply.status == 502
    assert json.loads(reply.body) == {
        "error": "upstream_unavailable",
        "message": "backend 'up' is unavailable",
        "request_id": "r-8",
    }
    RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert upstream.connections == 2  # the ambiguous connection was not reused


def test_a_head_trickling_in_is_cut_at_the_head_timeout(tmp_path: Path) -> None:
    upstream = RawUpstream(answer(response(body=b"ok"))).start()
    config = write_table(tmp_path / "routes.yaml", {"up": f"{{url: '{upstream.url}'}}"})
    process, gateway, _ = serve_process(config, "--head-timeout", "0.5")
    try:
        port = int(gateway.rsplit(":", 1)[1])
        slow = RawClient(port)
        slow.send(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        silent = RawClient(port)  # connects and sends nothing at all
        answered = b""
        with contextlib.suppress(ConnectionError, OSError):
            for number in range(40):  # a header every 0.1 s, never finishing
                # Meanwhile other clients are served.
                if number % 10 == 0:
                    assert (
                        RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"ok"
                    )
                slow.send(b"X-Slow-%d: 1\r\n" % number)
                time.sleep(0.1)
        answered = slow.read_until_closed()
        assert answered.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b'"error":"request_timeout"' in answered
        assert silent.read_until_closed().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert [r.request_line for r in upstream.requests] == ["GET / HTTP/1.1"] * len(
            upstream.requests
        )
    finally:
        assert process.stop() == 0
        upstream.stop()


def test_an_endless_head_is_cut_while_it_arrives(tmp_path: Path) -> None:
    upstream = RawUpstream(answer(response(body=b"ok"))).start()
    config = write_table(tmp_path / "routes.yaml", {"up": f"{{url: '{upstream.url}'}}"})
    # The bound is the URI and header limits plus 16 KiB: 1024 + 1024 + 16384 bytes.
    process, gateway, _ = serve_process(
        config, "--max-uri-bytes", "1024", "--max-header-bytes", "1024"
    )
    try:
        port = int(gateway.rsplit(":", 1)[1])
        endless = RawClient(port)
        endless.send(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        with contextlib.suppress(ConnectionError, OSError):
            for number in range(2000):  # 400 KB in 200-byte lines, never ending
                endless.send(b"X-Filler-%04d: " % number + b"a" * 183 + b"\r\n")
        answered = endless.read_until_closed()
        assert answered.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        body = json.loads(answered.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "headers_too_large"
        assert body["message"] == "the request head is longer than 18432 bytes"
        assert upstream.requests == []
        # A head over the gateway's own limit but under the bound gets the exact 431.
        client = RawClient(port)
        reply = client.request(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n")
        assert reply.status == 431
        assert json.loads(reply.body)["message"] == "header fields larger than 1024 bytes"
        # Others, and the next request on a kept-alive connection, are served.
        keep = RawClient(port)
        for _ in range(3):
            assert keep.request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"ok"
    finally:
        assert process.stop() == 0
        upstream.stop()


@pytest.mark.parametrize("backend", ["url", "function"])
def test_a_stalled_request_body_is_408(tmp_path: Path, backend: str) -> None:
    upstream = RawUpstream(answer(response(body=b"ok"))).start()
    spec = (
        f"{{url: '{upstream.url}'}}"
        if backend == "url"
        else "{function: 'tests.functions:plain_string'}"
    )
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"version: 1\nbackends: {{up: {spec}}}\n"
        "routes: [{name: all, match: {path: /}, backend: up}]\n"
    )
    try:
        with running_gateway(config, limits=Limits(body_idle_timeout=0.5)) as (_, servers):
            client = RawClient(servers.port("gateway"))
            client.send(
                b"POST / HTTP/1.1\r\nHost: gw\r\nX-Request-Id: r-9\r\nContent-Length: 10\r\n\r\nabc"
            )  # 3 of 10 bytes, then nothing
            reply = client.read_response()
            assert reply.status == 408
            assert json.loads(reply.body) == {
                "error": "request_timeout",
                "message": "the request body stalled for 0.5s",
                "request_id": "r-9",
            }
            # A body that keeps coming, however slowly, is not cut.
            steady = RawClient(servers.port("gateway"))
            steady.send(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\n")
            for byte in b"abcd":
                time.sleep(0.2)
                steady.send(bytes([byte]))
            assert steady.read_response().status == 200
    finally:
        upstream.stop()
