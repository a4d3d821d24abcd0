"""HTTP/1.1 to the letter, over real sockets with exact bytes (docs/forwarding.md): HTTP/1.0
clients with and without Host and keep-alive, an upstream's early answer to an upload, a
transfer coding under chunked, an empty query, a backslash in the path."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import ProxyTo
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    Recorded,
    response,
    running_gateway,
    write_table,
)

pytestmark = pytest.mark.sockets

BODY = b"0123456789" * 5  # 50 bytes, ApacheBench's measured case


async def streamed(exchange: Exchange) -> None:
    """BODY in five chunks of ten, and the rest of the exchange as the target asks."""
    await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(BODY), 10):
        await exchange.send(b"a\r\n" + BODY[start : start + 10] + b"\r\n")
        await asyncio.sleep(0.01)
    await exchange.send(b"0\r\n\r\n")


# ---- HTTP/1.0 clients ---------------------------------------------------------------------------


def test_a_streamed_response_to_http_1_0_is_ended_by_close_never_chunked(
    proxy_to: ProxyTo,
) -> None:
    _, port = proxy_to(streamed)
    client = RawClient(port)
    client.send(b"GET /stream HTTP/1.0\r\nHost: gw\r\n\r\n")
    head = client.read_head()
    assert b"transfer-encoding" not in head.lower()
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"\r\nconnection: close" in head
    # Exactly the 50 bytes, no chunk framing among them, then the close.
    assert client.read_until_closed() == BODY


def test_http_1_0_without_host_is_forwarded_with_the_gateways_address(
    proxy_to: ProxyTo,
) -> None:
    upstream, port = proxy_to(
        lambda exchange: exchange.send(response(body=exchange.request.header("host")[0].encode()))
    )
    reply = RawClient(port).request(b"GET /where HTTP/1.0\r\n\r\n")
    address = f"127.0.0.1:{port}"
    assert (reply.status, reply.body) == (200, address.encode())
    (seen,) = upstream.requests
    assert seen.header("host") == [address]
    assert seen.header("x-forwarded-host") == [address]
    # The backend's own name never reaches it as Host: that made its absolute redirects point
    # past the gateway.
    assert str(upstream.port) not in seen.header("host")[0]


def test_http_1_0_keep_alive_is_kept_when_the_length_is_known(proxy_to: ProxyTo) -> None:
    async def script(exchange: Exchange) -> None:
        if exchange.request.target == "/stream":
            await streamed(exchange)
        else:
            await exchange.send(response(body=exchange.request.target.encode()))

    _, port = proxy_to(script)
    client = RawClient(port)
    keep = b"Host: gw\r\nConnection: keep-alive\r\n\r\n"
    first = client.request(b"GET /one HTTP/1.0\r\n" + keep)
    assert (first.status, first.body) == (200, b"/one")
    assert first.header("connection") == ["keep-alive"]
    second = client.request(b"GET /two HTTP/1.0\r\n" + keep)
    assert (second.status, second.body) == (200, b"/two")
    # A response without a length can only end with the connection, whatever was asked.
    client.send(b"GET /stream HTTP/1.0\r\n" + keep)
    head = client.read_head()
    assert b"\r\nconnection: close" in head
    assert b"transfer-encoding" not in head.lower()
    assert client.read_until_closed() == BODY


def test_http_1_0_without_keep_alive_is_closed_after_its_response(proxy_to: ProxyTo) -> None:
    _, port = proxy_to(lambda exchange: exchange.send(response(body=b"once")))
    client = RawClient(port)
    client.send(b"GET / HTTP/1.0\r\nHost: gw\r\n\r\nGET /never HTTP/1.0\r\nHost: gw\r\n\r\n")
    reply = client.read_response()
    assert (reply.status, reply.body, reply.header("connection")) == (200, b"once", ["close"])
    assert client.read_until_closed() == b""


# ---- an early answer to an upload -----------------------------------------------------------


class HeadOnly(RawUpstream):
    """Reads a request's head only, never its body (the script answers and closes)."""

    async def _read_request(self, reader: asyncio.StreamReader, connection: int) -> Recorded | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        return Recorded(head[:-4], b"", connection)


DENIED = b'{"error":"unauthorized"}'


async def deny_and_close(exchange: Exchange) -> None:
    # Closing with the upload unread makes the kernel reset the connection.
    await exchange.send(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(DENIED), DENIED)
    )
    exchange.close()


def test_an_upstreams_early_answer_to_an_upload_reaches_the_client_every_time(
    tmp_path: Path,
) -> None:
    # Measured before the fix: 502 in 5 of 15 tries. Forty tries: a failure one time in four
    # passes all of them with odds of 1 in 100,000.
    upstream = HeadOnly(deny_and_close).start()
    config = write_table(tmp_path / "routes.yaml", {"up": f"{{url: '{upstream.url}'}}"})
    size = 10 * 1024 * 1024
    outcomes: Counter[tuple[int, bytes]] = Counter()
    try:
        with running_gateway(config) as (_, servers):
            port = servers.port("gateway")
            for _ in range(40):
                client = RawClient(port, timeout=10)
                client.send(
                    b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size
                )
                chunk = b"x" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        client.sock.sendall(chunk)
                except OSError:
                    pass  # the gateway may stop reading once the answer came
                reply = client.read_response()
                outcomes[(reply.status, reply.body)] += 1
                client.close()
    finally:
        upstream.stop()
    assert outcomes == Counter({(401, DENIED): 40})


# ---- what an upstream sends --------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        (b"gzip, chunked", gzip.compress),
        (b"deflate, chunked", zlib.compress),
        (b"gzip", gzip.compress),
    ],
    ids=["gzip-chunked", "deflate-chunked", "gzip-until-close"],
)
def test_a_transfer_coding_under_chunked_is_decoded(
    proxy_to: ProxyTo, coding: bytes, encode: object
) -> None:
    plain = b"".join(b"line %d of a coded body\n" % n for n in range(2000))
    coded = encode(plain)  # type: ignore[operator]

    async def script(exchange: Exchange) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\nX-Kept: 1\r\n\r\n"
        if coding.endswith(b"chunked"):
            pieces = [coded[i : i + 1000] for i in range(0, len(coded), 1000)]
            body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            await exchange.send(head + body)
        else:
            await exchange.send(head + coded)
            exchange.close()

    _, port = proxy_to(script)
    client = RawClient(port)
    reply = client.request(b"GET /coded HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 200
    assert reply.header("transfer-encoding") == ["chunked"]  # the gateway's own framing only
    assert reply.header("content-encoding") == []
    assert reply.header("x-kept") == ["1"]
    assert reply.body == plain


@pytest.mark.parametrize("coding", [b"br, chunked", b"compress, chunked", b"gzip, gzip, chunked"])
def test_a_transfer_coding_that_cannot_be_decoded_is_a_502(
    proxy_to: ProxyTo, coding: bytes
) -> None:
    async def script(exchange: Exchange) -> None:
        await exchange.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )

    _, port = proxy_to(script)
    reply = RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 502
    assert json.loads(reply.body)["error"] == "upstream_unavailable"


def test_a_gzip_bomb_reaches_the_client_decoded_whole(proxy_to: ProxyTo) -> None:
    # 64 MiB of zeros in about 64 KiB. That it is decoded a buffer at a time, never all at
    # once, is tests/unit/test_transport.py's to show; here, every byte arrives.
    plain_size = 64 * 1024 * 1024
    coder = zlib.compressobj(9, zlib.DEFLATED, 31)
    coded = coder.compress(b"\0" * plain_size) + coder.flush()

    async def script(exchange: Exchange) -> None:
        await exchange.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            + b"%x\r\n%b\r\n0\r\n\r\n" % (len(coded), coded)
        )

    _, port = proxy_to(script)
    reply = RawClient(port, timeout=30).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert (reply.status, len(reply.body), reply.body.count(0)) == (200, plain_size, plain_size)


# ---- the request target ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/a?", "/a?"),
        (b"/a", "/a"),
        (b"/a??", "/a??"),
        (b"/a?x=1&y", "/a?x=1&y"),
        (b"/a/../b?", "/b?"),
    ],
)
def test_the_query_is_forwarded_byte_for_byte_even_when_empty(
    proxy_to: ProxyTo, target: bytes, forwarded: str
) -> None:
    upstream, port = proxy_to(lambda exchange: exchange.send(response(body=b"")))
    reply = RawClient(port).request(b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert reply.status == 200
    assert [r.target for r in upstream.requests] == [forwarded]


@pytest.mark.parametrize("target", [b"/a\\b", b"/\\evil.example/x", b"/a%5Cb"])
def test_a_backslash_in_the_path_gets_the_gateways_json_400(
    proxy_to: ProxyTo, target: bytes
) -> None:
    upstream, port = proxy_to(lambda exchange: exchange.send(response(body=b"")))
    client = RawClient(port)
    reply = client.request(
        b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\nX-Request-Id: bs-1\r\n\r\n"
    )
    assert reply.status == 400
    assert reply.header("content-type") == ["application/json"]
    assert json.loads(reply.body)["error"] == "bad_request"
    assert json.loads(reply.body)["request_id"] == "bs-1"
    assert upstream.requests == []
