"""The upstream HTTP/1.1 client (proxy/backends/transport.py) over fake sockets: the request as
it goes on the wire, byte for byte; the response as llhttp parses it, ending exactly where the
response ends and bounded in its head; and the pool, which reuses only connections that are
known clean and sends a request a second time only when it may."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from proxy.backends import transport as transport_module
from proxy.backends.transport import (
    KEEPALIVE_EXPIRY,
    READ_BUFFER_HIGH,
    HeadLimits,
    Origin,
    Outgoing,
    Transport,
    UpstreamResponse,
    _Connection,
)

pytestmark = pytest.mark.anyio

ORIGIN: Origin = ("http", "upstream.test", 8081)
#: In a reply script: the upstream closes the connection, or says nothing.
CLOSE = None
SILENT = b""
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Upstream(asyncio.Transport):
    """A socket to an upstream. It records every write; given a script, it answers each request
    head written with the script's next reply (bytes, or CLOSE), on the next turn of the loop."""

    def __init__(
        self,
        protocol: _Connection,
        script: list[bytes | None] | None = None,
        *,
        body_fails: bool = False,
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.script = script
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.body_fails = body_fails

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.body_fails and self.writes:
            raise RuntimeError("the peer closed the connection")
        self.writes.append(bytes(data))
        if self.script is not None:
            reply = self.script.pop(0)
            loop = asyncio.get_running_loop()
            if reply is CLOSE:
                loop.call_soon(self.lose)
            elif reply:
                loop.call_soon(self.protocol.data_received, reply)

    def lose(self) -> None:
        self.protocol.eof_received()
        self.closed = True
        self.protocol.connection_lost(None)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def open_connection(**options: Any) -> tuple[_Connection, Upstream]:
    connection = _Connection(ORIGIN, asyncio.get_running_loop())
    socket = Upstream(connection, **options)
    connection.connection_made(socket)
    return connection, socket


async def within(awaitable: Any) -> Any:
    """What ``awaitable`` gives, failing the test rather than hanging if it never does."""
    return await asyncio.wait_for(awaitable, 2)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def get(target: bytes = b"/", *headers: tuple[bytes, bytes], **options: Any) -> Outgoing:
    return Outgoing("GET", target, [(b"host", b"upstream.test"), *headers], **options)


async def body_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class Exchange:
    """One request on a fresh connection, the upstream's bytes fed to it by hand."""

    def __init__(self, outgoing: Outgoing, limits: HeadLimits | None = None, **options: Any):
        self.connection, self.socket = open_connection(**options)
        self.pool = Transport()
        self.task = asyncio.ensure_future(
            self.connection.exchange(outgoing, limits or HeadLimits(), self.pool)
        )

    async def reply(self, *pieces: bytes | None) -> UpstreamResponse:
        await settle()
        for piece in pieces:
            if piece is CLOSE:
                self.socket.lose()
            else:
                self.connection.data_received(piece)
        return await within(self.task)  # type: ignore[no-any-return]

    def reused(self) -> bool:
        return self.pool._take(ORIGIN) is self.connection


# -- the request on the wire --------------------------------------------------------------


async def test_the_request_head_is_written_byte_for_byte_in_one_write() -> None:
    outgoing = Outgoing(
        "GET",
        b"/p/a%2Fb?q=1&r",
        [
            (b"host", b"upstream.test:8081"),
            (b"x-spaced", b"  a \t b "),
            (b"set-thing", b"1"),
            (b"set-thing", b"2"),
            (b"x-bytes", b"\xe9t\xe9"),
        ],
    )
    exchange = Exchange(outgoing)
    await exchange.reply(OK)
    assert exchange.socket.writes == [
        b"GET /p/a%2Fb?q=1&r HTTP/1.1\r\n"
        b"host: upstream.test:8081\r\n"
        b"x-spaced:   a \t b \r\n"
        b"set-thing: 1\r\n"
        b"set-thing: 2\r\n"
        b"x-bytes: \xe9t\xe9\r\n"
        b"\r\n"
    ]


async def test_a_body_with_a_length_goes_as_it_is() -> None:
    outgoing = Outgoing(
        "POST",
        b"/up",
        [(b"host", b"u"), (b"content-length", b"5")],
        body=body_of(b"he", b"", b"llo"),
    )
    exchange = Exchange(outgoing)
    await exchange.reply(OK)
    assert exchange.socket.writes == [
        b"POST /up HTTP/1.1\r\nhost: u\r\ncontent-length: 5\r\n\r\n",
        b"he",
        b"llo",
    ]


async def test_a_body_without_a_length_is_sent_chunked() -> None:
    outgoing = Outgoing("POST", b"/up", [(b"host", b"u")], body=body_of(b"hello", b"", b"a" * 26))
    exchange = Exchange(outgoing)
    await exchange.reply(OK)
    assert exchange.socket.writes == [
        b"POST /up HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
        b"1A\r\n" + b"a" * 26 + b"\r\n",
        b"0\r\n\r\n",
    ]


async def test_a_request_already_chunked_is_not_marked_twice() -> None:
    outgoing = Outgoing(
        "POST",
        b"/up",
        [(b"host", b"u"), (b"transfer-encoding", b"chunked")],
        body=body_of(b"abc"),
    )
    exchange = Exchange(outgoing)
    await exchange.reply(OK)
    assert exchange.socket.writes == [
        b"POST /up HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n",
        b"0\r\n\r\n",
    ]


async def test_an_empty_streamed_body_is_one_last_chunk() -> None:
    outgoing = Outgoing("PUT", b"/e", [(b"host", b"u")], body=body_of())
    exchange = Exchange(outgoing)
    await exchange.reply(OK)
    assert exchange.socket.data == (
        b"PUT /e HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/", [(b"x-a", b"1\r\nx-injected: 1")]),
        (b"/", [(b"x-a", b"1\nx-injected: 1")]),
        (b"/", [(b"x-a", b"1\rx")]),
        (b"/", [(b"x-a\r\nx-injected", b"1")]),
        (b"/", [(b"x-a\n", b"1")]),
        (b"/ HTTP/1.1\r\nhost: evil\r\n\r\nGET /smuggled", []),
        (b"/\n", []),
    ],
)
async def test_cr_or_lf_in_a_field_raises_before_anything_is_written(
    target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    connection, socket = open_connection()
    outgoing = Outgoing("GET", target, [(b"host", b"u"), *headers])
    with pytest.raises(httpx.LocalProtocolError):
        await within(connection.exchange(outgoing, HeadLimits(), Transport()))
    assert socket.writes == []


async def test_an_upstream_that_answers_and_stops_reading_the_body_is_heard() -> None:
    # A 413 before the end of an upload, then the upstream stops reading: its answer is passed
    # on, and the connection is never reused.
    outgoing = Outgoing(
        "POST", b"/up", [(b"host", b"u"), (b"content-length", b"4")], body=body_of(b"ab", b"cd")
    )
    connection, socket = open_connection(body_fails=True)
    pool = Transport()
    task = asyncio.ensure_future(connection.exchange(outgoing, HeadLimits(), pool))
    await settle()  # the head went out; the body's first write failed
    assert socket.writes == [b"POST /up HTTP/1.1\r\nhost: u\r\ncontent-length: 4\r\n\r\n"]
    connection.data_received(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    response = await within(task)
    assert response.status == 413
    response.close()
    assert pool._take(ORIGIN) is None
    assert socket.closed


async def test_a_write_that_fails_without_an_answer_is_a_write_error() -> None:
    outgoing = Outgoing(
        "POST", b"/up", [(b"host", b"u"), (b"content-length", b"2")], body=body_of(b"ab")
    )
    exchange = Exchange(outgoing, body_fails=True)
    with pytest.raises(httpx.WriteError):
        await exchange.reply(CLOSE)


# -- the response -------------------------------------------------------------------------


async def test_status_reason_and_headers_byte_for_byte_then_the_body() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 201 Made It\r\nX-Case: MiXeD\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    assert response.status == 201
    assert response.reason == b"Made It"
    assert response.headers == [
        (b"X-Case", b"MiXeD"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"5"),
    ]
    assert response.complete
    assert response.body_complete
    assert response.take() == b"hello"
    assert response.take() == b""
    assert response.clean
    response.close()
    assert exchange.reused()


async def test_the_head_is_returned_before_the_body_arrives() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
    assert not response.complete
    assert response.take() == b""
    reading = asyncio.ensure_future(response.next_chunk())
    await settle()
    assert not reading.done()
    exchange.connection.data_received(b"abc")
    assert await within(reading) == b"abc"
    exchange.connection.data_received(b"de")
    exchange.connection.data_received(b"f")
    assert await within(response.next_chunk()) == b"de"
    assert await within(response.next_chunk()) == b"f"
    assert await within(response.next_chunk()) == b""
    assert response.clean


async def test_a_chunked_body_is_passed_on_transfer_decoded() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        b"3\r\nabc\r\n",
        b"2\r\nde\r\n0\r\n\r\n",
    )
    assert response.take() == b"abcde"  # content coding untouched: these are the bytes sent
    assert response.body_complete
    assert response.clean


async def test_hold_waits_for_the_whole_body_within_a_limit() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    holding = asyncio.ensure_future(response.hold(10))
    await settle()
    assert not holding.done()
    exchange.connection.data_received(b"def")
    assert await within(holding) is True
    assert response.take() == b"abcdef"


async def test_hold_gives_up_once_more_than_the_limit_is_waiting() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    holding = asyncio.ensure_future(response.hold(4))
    await settle()
    assert not holding.done()
    exchange.connection.data_received(b"de")
    assert await within(holding) is False
    assert response.take() == b"abcde"  # nothing was read meanwhile


async def test_hold_of_a_complete_body_larger_than_the_limit_is_false() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert await within(response.hold(4)) is False
    assert await within(response.hold(5)) is True


async def test_hold_raises_when_the_response_breaks() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    holding = asyncio.ensure_future(response.hold(100))
    await settle()
    exchange.socket.lose()
    with pytest.raises(httpx.RemoteProtocolError, match="mid-body"):
        await within(holding)


async def test_interim_responses_are_skipped() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    assert response.status == 200
    assert response.reason == b"OK"
    assert response.headers == [(b"Content-Length", b"2")]
    assert response.take() == b"ok"
    assert response.clean


async def test_interim_fields_do_not_count_toward_the_final_heads_limit() -> None:
    exchange = Exchange(get(), HeadLimits(max_headers=2))
    response = await exchange.reply(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nLink: </b>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.headers == [(b"X-A", b"1"), (b"Content-Length", b"0")]


async def test_trailer_fields_are_dropped() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"2\r\nok\r\n0\r\nX-Checksum: 1234\r\nSet-Cookie: evil=1\r\n\r\n"
    )
    assert response.headers == [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-Checksum")]
    assert response.take() == b"ok"
    assert response.clean
    response.close()
    assert exchange.reused()


async def test_parsing_stops_at_the_end_of_the_response() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 500 Evil\r\nX-Evil: 1\r\nContent-Length: 4\r\n\r\nevil"
    )
    assert (response.status, response.reason) == (200, b"OK")
    assert response.headers == [(b"Content-Length", b"2")]
    assert response.take() == b"ok"
    assert response.overrun
    assert not response.clean
    response.close()
    assert not exchange.reused()
    assert exchange.socket.closed


async def test_bytes_after_the_end_in_a_later_read_spoil_the_connection() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(OK)
    exchange.connection.data_received(b"late bytes")
    assert response.overrun
    assert response.take() == b"ok"
    response.close()
    assert not exchange.reused()


async def test_a_body_longer_than_its_length_in_one_read_is_an_overrun() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert response.take() == b"ok"
    assert response.overrun
    response.close()
    assert not exchange.reused()


async def test_too_many_header_fields_fail() -> None:
    exchange = Exchange(get(), HeadLimits(max_headers=2))
    with pytest.raises(httpx.RemoteProtocolError, match="more than 2 fields"):
        await exchange.reply(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert exchange.socket.closed


async def test_header_fields_up_to_the_limit_pass() -> None:
    exchange = Exchange(get(), HeadLimits(max_headers=2, max_bytes=17))
    # names and values: 1 + 1 + 14 + 1 = 17 bytes
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 200


async def test_header_bytes_beyond_the_limit_fail() -> None:
    exchange = Exchange(get(), HeadLimits(max_bytes=16))
    with pytest.raises(httpx.RemoteProtocolError, match="larger than 16 bytes"):
        await exchange.reply(b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n")
    assert exchange.socket.closed


ENDLESS_HEAD = [b"HTTP/1.1 200 OK\r\nX-Endless: ", *[b"a" * 8192] * 3]


async def test_a_head_that_never_ends_is_bounded_by_the_bytes_received() -> None:
    # One field arriving in pieces is held by llhttp until its line ends: the bytes received
    # bound it (the limit, plus slack for the status line and line ends).
    exchange = Exchange(get(), HeadLimits(max_bytes=100))
    with pytest.raises(Exception, match="larger than 100 bytes"):
        await exchange.reply(*ENDLESS_HEAD)
    assert exchange.socket.closed


async def test_a_head_that_never_ends_fails_as_a_remote_protocol_error() -> None:
    exchange = Exchange(get(), HeadLimits(max_bytes=100))
    with pytest.raises(httpx.RemoteProtocolError, match="larger than 100 bytes"):
        await exchange.reply(*ENDLESS_HEAD)


@pytest.mark.parametrize(
    ("status_line", "message"),
    [
        (b"HTTP/1.1 600 Nope", "outside 100-599"),
        (b"HTTP/1.1 099 Nope", "outside 100-599"),
        (b"HTTP/1.1 999 Nope", "outside 100-599"),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c", "unasked"),
    ],
)
async def test_statuses_that_are_not_a_response_fail(status_line: bytes, message: str) -> None:
    exchange = Exchange(get())
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        await exchange.reply(status_line + b"\r\nContent-Length: 0\r\n\r\n")
    assert exchange.socket.closed


async def test_garbage_is_a_protocol_error() -> None:
    exchange = Exchange(get())
    with pytest.raises(httpx.RemoteProtocolError, match="bad response"):
        await exchange.reply(b"SMTP ready\r\n\r\n")
    assert exchange.socket.closed


async def test_a_response_ended_by_close() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nabc")
    assert not response.complete
    exchange.connection.data_received(b"def")
    exchange.socket.lose()
    assert response.complete
    assert response.body_complete
    assert response.take() == b"abcdef"
    assert not response.clean  # the connection is gone
    response.close()
    assert not exchange.reused()


async def test_closed_mid_head() -> None:
    exchange = Exchange(get())
    with pytest.raises(httpx.RemoteProtocolError, match="mid-head"):
        await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Le", CLOSE)


async def test_closed_mid_body() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    exchange.socket.lose()
    assert not response.body_complete
    assert await within(response.next_chunk()) == b"abc"
    with pytest.raises(httpx.RemoteProtocolError, match="mid-body"):
        await within(response.next_chunk())


async def test_closed_mid_chunked_body() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    exchange.socket.lose()
    assert await within(response.next_chunk()) == b"abc"
    with pytest.raises(httpx.RemoteProtocolError, match="mid-body"):
        await within(response.next_chunk())


async def test_closed_before_any_byte() -> None:
    exchange = Exchange(get())
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await exchange.reply(CLOSE)


async def test_a_head_response_is_complete_at_its_head() -> None:
    exchange = Exchange(Outgoing("HEAD", b"/", [(b"host", b"u")]))
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert response.complete
    assert response.body_complete
    assert response.take() == b""
    assert await within(response.next_chunk()) == b""
    assert response.clean
    response.close()
    assert exchange.reused()


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses_are_complete_at_their_head(status: int) -> None:
    exchange = Exchange(get())
    length = b"Content-Length: 100\r\n" if status == 304 else b""
    response = await exchange.reply(b"HTTP/1.1 %d X\r\n%b\r\n" % (status, length))
    assert response.complete
    assert response.take() == b""
    assert response.clean


async def test_a_response_that_closes_is_not_reused() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    assert response.take() == b"ok"
    assert not response.clean
    response.close()
    assert not exchange.reused()
    assert exchange.socket.closed


async def test_an_abandoned_response_closes_its_connection() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    response.close()
    response.close()  # once is what counts
    assert not exchange.reused()
    assert exchange.socket.closed


async def test_reading_pauses_while_the_body_waits_and_resumes_when_taken() -> None:
    exchange = Exchange(get())
    size = READ_BUFFER_HIGH + 1
    response = await exchange.reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (size * 2))
    exchange.connection.data_received(b"x" * size)
    assert not exchange.socket.reading
    assert response.take() == b"x" * size
    assert exchange.socket.reading
    half = READ_BUFFER_HIGH // 2
    exchange.connection.data_received(b"y" * (half + 1))
    exchange.connection.data_received(b"z" * half)
    assert not exchange.socket.reading
    assert await within(response.next_chunk()) == b"y" * (half + 1)
    assert exchange.socket.reading  # half the buffer or less is waiting
    assert await within(response.next_chunk()) == b"z" * half


# -- the pool -------------------------------------------------------------------------------


class ScriptedPool(Transport):
    """A pool whose connections go to scripted upstreams, one script per connection."""

    def __init__(self, *scripts: list[bytes | None]) -> None:
        super().__init__()
        self.scripts = list(scripts)
        self.sockets: list[Upstream] = []

    async def _connect(self, origin: Origin, limit: float | None) -> _Connection:
        connection = _Connection(origin, asyncio.get_running_loop())
        socket = Upstream(connection, self.scripts.pop(0))
        connection.connection_made(socket)
        self.sockets.append(socket)
        return connection


async def fetch(pool: Transport, outgoing: Outgoing) -> tuple[int, bytes]:
    response = await within(pool.request(ORIGIN, outgoing, HeadLimits(), 1.0))
    try:
        body = b""
        while chunk := await within(response.next_chunk()):
            body += chunk
        return response.status, body
    finally:
        response.close()


async def test_a_clean_connection_is_reused() -> None:
    pool = ScriptedPool([OK, b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes"])
    assert await fetch(pool, get(b"/1")) == (200, b"ok")
    assert await fetch(pool, get(b"/2")) == (201, b"yes")
    (socket,) = pool.sockets
    assert socket.writes == [
        b"GET /1 HTTP/1.1\r\nhost: upstream.test\r\n\r\n",
        b"GET /2 HTTP/1.1\r\nhost: upstream.test\r\n\r\n",
    ]


async def test_give_back_then_take_and_origins_apart() -> None:
    pool = Transport()
    connection, _ = open_connection()
    pool.give_back(connection)
    assert pool._take(("http", "other.test", 8081)) is None
    assert pool._take(ORIGIN) is connection
    assert pool._take(ORIGIN) is None


async def test_bytes_arriving_on_an_idle_connection_spoil_it() -> None:
    pool = Transport()
    connection, socket = open_connection()
    pool.give_back(connection)
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert socket.closed
    assert pool._take(ORIGIN) is None


async def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    pool = Transport()
    connection, socket = open_connection()
    pool.give_back(connection)
    connection.eof_received()
    assert pool._take(ORIGIN) is None
    assert socket.closed


async def test_an_expired_idle_connection_is_closed_not_reused() -> None:
    pool = Transport()
    old, old_socket = open_connection()
    fresh, _ = open_connection()
    pool.give_back(fresh)
    pool.give_back(old)
    old.idle_since -= KEEPALIVE_EXPIRY + 1
    assert pool._take(ORIGIN) is fresh
    assert old_socket.closed


async def test_at_most_max_idle_per_origin_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "MAX_IDLE_PER_ORIGIN", 2)
    pool = Transport()
    opened = [open_connection() for _ in range(3)]
    for connection, _ in opened:
        pool.give_back(connection)
    assert [socket.closed for _, socket in opened] == [False, False, True]
    taken = {pool._take(ORIGIN), pool._take(ORIGIN)}
    assert taken == {opened[0][0], opened[1][0]}
    assert pool._take(ORIGIN) is None


async def test_aclose_closes_the_idle_connections() -> None:
    pool = Transport()
    connection, socket = open_connection()
    pool.give_back(connection)
    await pool.aclose()
    assert socket.closed
    assert pool._take(ORIGIN) is None


async def test_a_reused_connection_closed_unanswered_is_retried_once_when_replayable() -> None:
    pool = ScriptedPool([OK, CLOSE], [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"])
    await fetch(pool, get(b"/1"))
    assert await fetch(pool, get(b"/2", replayable=True)) == (200, b"again")
    first, second = pool.sockets
    assert first.closed
    assert second.writes == [b"GET /2 HTTP/1.1\r\nhost: upstream.test\r\n\r\n"]


async def test_a_reused_connection_closed_unanswered_is_not_retried_when_not_replayable() -> None:
    pool = ScriptedPool([OK, CLOSE], [OK])
    await fetch(pool, get(b"/1"))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await fetch(pool, get(b"/2", replayable=False))
    assert len(pool.sockets) == 1
    assert pool.sockets[0].closed


async def test_the_retry_is_made_once_only() -> None:
    pool = ScriptedPool([OK, CLOSE], [CLOSE], [OK])
    await fetch(pool, get(b"/1"))
    with pytest.raises(httpx.RemoteProtocolError):
        await fetch(pool, get(b"/2", replayable=True))
    assert len(pool.sockets) == 2


async def test_a_new_connection_closed_unanswered_is_not_retried() -> None:
    pool = ScriptedPool([CLOSE], [OK])
    with pytest.raises(httpx.RemoteProtocolError):
        await fetch(pool, get(b"/1", replayable=True))
    assert len(pool.sockets) == 1


async def test_a_reused_connection_that_began_an_answer_is_not_retried() -> None:
    pool = ScriptedPool([OK, b"HTTP/1.1 200 OK\r\nContent-Le"], [OK])
    await fetch(pool, get(b"/1"))
    exchange = asyncio.ensure_future(
        pool.request(ORIGIN, get(b"/2", replayable=True), HeadLimits(), 1)
    )
    await settle()
    pool.sockets[0].lose()
    with pytest.raises(httpx.RemoteProtocolError, match="mid-head"):
        await within(exchange)
    assert len(pool.sockets) == 1


async def test_a_failed_exchange_closes_its_connection() -> None:
    pool = ScriptedPool([b"HTTP/1.1 600 Nope\r\n\r\n"], [OK])
    with pytest.raises(httpx.RemoteProtocolError):
        await fetch(pool, get(b"/1"))
    assert pool.sockets[0].closed
    assert await fetch(pool, get(b"/2")) == (200, b"ok")
    assert len(pool.sockets) == 2


async def test_a_reused_connection_is_closed_when_its_request_cannot_be_sent() -> None:
    pool = ScriptedPool([OK], [OK])
    await fetch(pool, get(b"/1"))
    with pytest.raises(httpx.LocalProtocolError):
        await fetch(pool, get(b"/2", (b"x-a", b"1\r\nx-b: 2")))
    assert pool.sockets[0].closed  # taken from the pool, so closed rather than leaked
    assert pool.sockets[0].writes == [b"GET /1 HTTP/1.1\r\nhost: upstream.test\r\n\r\n"]


@pytest.mark.parametrize("reused", [False, True])
async def test_a_cancelled_exchange_closes_its_connection(reused: bool) -> None:
    pool = ScriptedPool([OK, SILENT] if reused else [SILENT])
    if reused:
        await fetch(pool, get(b"/1"))
    waiting = asyncio.ensure_future(pool.request(ORIGIN, get(b"/2"), HeadLimits(), 1.0))
    await settle()
    assert not waiting.done()  # the upstream has not answered
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(pool.sockets) == 1
    assert pool.sockets[0].closed
    assert pool._take(ORIGIN) is None


# -- a handshake's 101 ------------------------------------------------------------------------

SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


async def test_a_handshakes_101_is_a_tunnels_head_and_keeps_what_follows_it() -> None:
    exchange = Exchange(get(upgrade=True))
    response = await exchange.reply(SWITCHED + b"\x81\x02hi")
    exchange.connection.data_received(b"\x81\x03you")  # before the tunnel takes over
    assert (response.status, response.switched, response.body_complete) == (101, True, True)
    assert response.take() == b""  # the frames are not a body
    taken: list[tuple[int, bytes]] = []

    class Recorder:
        def attach(self, side: int, transport: Any, early: bytes, paused: bool) -> None:
            taken.append((side, early))

    response.switch(Recorder())  # type: ignore[arg-type]
    assert taken == [(1, b"\x81\x02hi\x81\x03you")]
    response.close()
    assert exchange.socket.closed  # never pooled
    assert not exchange.reused()


@pytest.mark.parametrize(
    ("upgrade", "head", "message"),
    [
        (False, SWITCHED, "unasked"),
        (True, SWITCHED.replace(b"websocket", b"h2c"), "'h2c', not websocket"),
        (True, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "'', not websocket"),
    ],
)
async def test_a_101_that_is_not_a_websocket_the_request_asked_for_fails(
    upgrade: bool, head: bytes, message: str
) -> None:
    exchange = Exchange(get(upgrade=upgrade))
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        await exchange.reply(head)
    assert exchange.socket.closed


async def test_a_refused_handshake_is_an_ordinary_response() -> None:
    exchange = Exchange(get(upgrade=True))
    response = await exchange.reply(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert (response.status, response.switched, response.take()) == (403, False, b"no")


# -- transfer codings under chunked -----------------------------------------------------------


def chunked(data: bytes, size: int = 100) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("coding", "wbits"), [(b"gzip", 31), (b"x-gzip", 31), (b"deflate", 15), (b"GZip", 31)]
)
async def test_a_transfer_coding_under_chunked_is_decoded(coding: bytes, wbits: int) -> None:
    plain = b"".join(b"record %d;" % n for n in range(500))
    coder = zlib.compressobj(6, zlib.DEFLATED, wbits)
    coded = coder.compress(plain) + coder.flush()
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b", chunked\r\n\r\n" + chunked(coded)
    )
    body = response.take()
    while chunk := await within(response.next_chunk()):
        body += chunk
    assert body == plain
    assert response.clean


async def test_a_coded_body_decodes_a_buffer_at_a_time_as_it_is_read() -> None:
    plain_size = 8 * READ_BUFFER_HIGH
    coder = zlib.compressobj(9, zlib.DEFLATED, 31)
    coded = coder.compress(b"\0" * plain_size) + coder.flush()
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(coded, 1 << 20)
    )
    # All of it has arrived, coded; decoded so far: one buffer, and reading is paused.
    assert response._buffered <= READ_BUFFER_HIGH
    assert not exchange.socket.reading
    assert not response.body_complete
    sizes = []
    while chunk := await within(response.next_chunk()):
        sizes.append(len(chunk))
    assert sum(sizes) == plain_size
    assert max(sizes) <= READ_BUFFER_HIGH
    assert response.clean


@pytest.mark.parametrize(
    ("coding", "message"),
    [
        (b"br, chunked", "'br' is not supported"),
        (b"gzip, gzip, chunked", "'gzip, gzip' is not supported"),
        (b"compress, chunked", "'compress' is not supported"),
    ],
)
async def test_a_transfer_coding_that_cannot_be_decoded_fails_at_the_head(
    coding: bytes, message: str
) -> None:
    exchange = Exchange(get())
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        await exchange.reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n" + chunked(b"x")
        )


async def test_a_broken_coded_body_fails_mid_body() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(b"not gzip")
    )
    with pytest.raises(httpx.RemoteProtocolError, match="coded body is broken"):
        await within(response.next_chunk())


async def test_a_gzip_body_ended_by_close_is_decoded() -> None:
    exchange = Exchange(get())
    response = await exchange.reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + gzip.compress(b"until the end")
    )
    exchange.socket.lose()
    body = response.take()
    while chunk := await within(response.next_chunk()):
        body += chunk
    assert body == b"until the end"
    assert not response.clean  # ended by the close: never reused
