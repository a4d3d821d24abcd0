"""One request and its response as ASGI sees them (proxy/cycle.py), driven through a fake
connection: how the response is framed on the wire, byte for byte and write by write, what
``receive()`` hands the app, when ``100 Continue`` goes out, and what losing the client does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.cycle import Cycle, run_app, status_line

pytestmark = pytest.mark.anyio

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RecordingTransport:
    """Every write and writelines call, one entry per call, so that "one write" is checkable."""

    def __init__(self) -> None:
        self.calls: list[bytes | list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.calls.append([bytes(chunk) for chunk in chunks])

    @property
    def data(self) -> bytes:
        return b"".join(c if isinstance(c, bytes) else b"".join(c) for c in self.calls)


class FakeConnection:
    """What proxy.cycle.Connection asks for, recording how the cycle used it."""

    def __init__(self) -> None:
        self.transport = RecordingTransport()
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self.drains = 0
        self.resumed: list[Cycle] = []
        self.finished_cycles: list[Cycle] = []
        self._drained: asyncio.Future[None] | None = None

    def write_paused(self) -> bool:
        return self.paused

    async def drain(self) -> None:
        self.drains += 1
        self._drained = self.loop.create_future()
        await self._drained

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def resume_reading_for(self, cycle: Cycle) -> None:
        self.resumed.append(cycle)

    def finished(self, cycle: Cycle) -> None:
        self.finished_cycles.append(cycle)


def make_cycle(
    method: str = "GET",
    http_version: str = "1.1",
    *,
    keep_alive: bool = True,
    expect_continue: bool = False,
    has_body: bool = False,
) -> tuple[Cycle, FakeConnection]:
    connection = FakeConnection()
    scope = {"type": "http", "method": method, "http_version": http_version, "path": "/x"}
    cycle = Cycle(
        connection,  # type: ignore[arg-type]
        scope,
        keep_alive=keep_alive,
        expect_continue=expect_continue,
        has_body=has_body,
    )
    return cycle, connection


async def within(awaitable: Any) -> Any:
    """What ``awaitable`` gives, failing the test rather than hanging if it never does."""
    return await asyncio.wait_for(awaitable, 2)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- the status line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (418, b"HTTP/1.1 418 I'm a Teapot\r\n"),
        (599, b"HTTP/1.1 599 \r\n"),
        (299, b"HTTP/1.1 299 \r\n"),
    ],
)
async def test_status_lines_for_registered_and_unregistered_statuses(
    status: int, line: bytes
) -> None:
    assert status_line(status) == line
    cycle, connection = make_cycle()
    cycle.respond(status, [(b"content-length", b"0")], b"", False)
    assert connection.transport.data == line + b"content-length: 0\r\n\r\n"


@pytest.mark.parametrize("status", [100, 101, 199, 600, 0])
async def test_a_status_that_is_not_final_is_refused(status: int) -> None:
    cycle, connection = make_cycle()
    with pytest.raises(RuntimeError, match="not a final response status"):
        cycle.respond(status, [], b"", False)
    assert connection.transport.calls == []


# -- framing --------------------------------------------------------------------------------


async def test_content_length_is_kept_and_the_head_goes_with_the_body_in_one_write() -> None:
    cycle, connection = make_cycle()
    cycle.respond(
        200, [(b"content-type", b"text/plain"), (b"content-length", b"5")], b"hello", False
    )
    assert connection.transport.calls == [
        [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n", b"hello"]
    ]
    assert cycle.response_complete
    assert connection.finished_cycles == [cycle]


async def test_a_body_in_pieces_within_its_content_length() -> None:
    cycle, connection = make_cycle()
    cycle.respond(200, [(b"content-length", b"5")], b"he", True)
    cycle.write(b"", True)
    cycle.write(b"llo", False)
    assert connection.transport.calls == [
        [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"he"],
        b"llo",
    ]


async def test_a_body_longer_than_its_content_length_raises() -> None:
    cycle, _ = make_cycle()
    with pytest.raises(RuntimeError, match="longer than its Content-Length"):
        cycle.respond(200, [(b"content-length", b"3")], b"abcd", False)

    cycle, connection = make_cycle()
    cycle.respond(200, [(b"content-length", b"3")], b"ab", True)
    with pytest.raises(RuntimeError, match="longer than its Content-Length"):
        cycle.write(b"cd", True)
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab"


async def test_a_body_shorter_than_its_content_length_raises() -> None:
    cycle, _ = make_cycle()
    with pytest.raises(RuntimeError, match="shorter than its Content-Length"):
        cycle.respond(200, [(b"content-length", b"3")], b"ab", False)

    cycle, _ = make_cycle()
    cycle.respond(200, [(b"content-length", b"3")], b"ab", True)
    with pytest.raises(RuntimeError, match="shorter than its Content-Length"):
        cycle.write(b"", False)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"1"), (b"content-length", b"1")],
        [(b"content-length", b"x")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"")],
    ],
)
async def test_a_repeated_or_invalid_content_length_raises(headers: list[Any]) -> None:
    cycle, _ = make_cycle()
    with pytest.raises(RuntimeError, match="Content-Length"):
        cycle.respond(200, headers, b"", False)


async def test_no_length_on_http11_is_chunked() -> None:
    cycle, connection = make_cycle()
    cycle.respond(200, [(b"x-a", b"1")], b"hello", True)
    cycle.write(b"", True)  # an empty piece must not become the last chunk
    cycle.write(b"0123456789abcdefg", True)
    cycle.write(b"", False)
    assert connection.transport.calls == [
        [
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"5\r\n",
            b"hello",
            b"\r\n",
        ],
        [b"11\r\n", b"0123456789abcdefg", b"\r\n"],
        b"0\r\n\r\n",
    ]
    assert cycle.keep_alive


async def test_a_chunked_body_written_whole_at_once() -> None:
    cycle, connection = make_cycle()
    cycle.respond(200, [], b"abc", False)
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )


async def test_http10_without_length_is_ended_by_close_never_chunked() -> None:
    cycle, connection = make_cycle(http_version="1.0", keep_alive=False)
    cycle.respond(200, [(b"x-a", b"1")], b"hello", True)
    cycle.write(b" world", False)
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\n\r\nhello world"
    )
    assert b"chunked" not in connection.transport.data
    assert not cycle.keep_alive


async def test_http10_with_length_keeps_it() -> None:
    cycle, connection = make_cycle(http_version="1.0", keep_alive=False)
    cycle.respond(200, [(b"content-length", b"2")], b"ok", False)
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    )


async def test_http10_even_if_kept_alive_is_not_chunked_and_closes() -> None:
    # The connection decides keep_alive; a 1.0 response without a length can only end by a
    # close, whatever it was told.
    cycle, connection = make_cycle(http_version="1.0", keep_alive=True)
    cycle.respond(200, [], b"x", False)
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nx"
    assert not cycle.keep_alive


async def test_head_keeps_content_length_and_writes_no_body() -> None:
    cycle, connection = make_cycle("HEAD")
    cycle.respond(200, [(b"content-length", b"42")], b"", False)
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n"
    assert cycle.response_complete


async def test_head_without_length_is_not_chunked_and_body_bytes_are_dropped() -> None:
    cycle, connection = make_cycle("HEAD")
    cycle.respond(200, [(b"x-a", b"1")], b"body", True)
    cycle.write(b"more", False)
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n"


@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_drop_content_length_and_carry_no_body(status: int) -> None:
    cycle, connection = make_cycle()
    cycle.respond(status, [(b"etag", b'"a"'), (b"content-length", b"4")], b"body", False)
    assert connection.transport.data == status_line(status) + b'etag: "a"\r\n\r\n'
    assert cycle.response_complete
    assert cycle.keep_alive


@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_without_length_are_not_chunked(status: int) -> None:
    cycle, connection = make_cycle()
    cycle.respond(status, [], b"", False)
    assert connection.transport.data == status_line(status) + b"\r\n"


# -- connection: close ------------------------------------------------------------------------


async def test_connection_close_when_not_kept_alive() -> None:
    cycle, connection = make_cycle(keep_alive=False)
    cycle.respond(200, [(b"content-length", b"0")], b"", False)
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


async def test_connection_close_when_the_request_body_is_not_complete_at_response_start() -> None:
    cycle, connection = make_cycle("POST", has_body=True)
    cycle.feed_body(b"part")
    cycle.respond(413, [(b"content-length", b"0")], b"", False)
    assert not cycle.keep_alive
    assert connection.transport.data == (
        status_line(413) + b"content-length: 0\r\nconnection: close\r\n\r\n"
    )


async def test_a_complete_request_body_keeps_the_connection() -> None:
    cycle, connection = make_cycle("POST", has_body=True)
    cycle.feed_body(b"all")
    cycle.end_body()
    cycle.respond(200, [(b"content-length", b"0")], b"", False)
    assert cycle.keep_alive
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


# -- ASGI send: checks and the app's own framing headers ------------------------------------


async def send_response(cycle: Cycle, headers: list[Any], *bodies: bytes) -> None:
    await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    for index, body in enumerate(bodies):
        more = index < len(bodies) - 1
        await cycle.send({"type": "http.response.body", "body": body, "more_body": more})


@pytest.mark.parametrize(
    "header",
    [
        (b"bad name", b"v"),
        (b"bad:name", b"v"),
        (b"", b"v"),
        (b"x-a\r\nx-b", b"v"),
        (b"x-a", b"v\r\nx-b: 1"),
        (b"x-a", b"v\rx"),
        (b"x-a", b"v\nx"),
        (b"x-a", b"v\0x"),
    ],
)
async def test_invalid_asgi_response_headers_raise_before_a_byte_is_written(
    header: tuple[bytes, bytes],
) -> None:
    cycle, connection = make_cycle()
    with pytest.raises(RuntimeError, match="invalid response header"):
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [header]})
    await settle()
    assert connection.transport.calls == []


async def test_asgi_header_names_are_lower_cased_and_values_kept_byte_for_byte() -> None:
    cycle, connection = make_cycle()
    await send_response(
        cycle, [(b"X-Mixed-Case", b" Value\tWith ;Stuff"), (b"Content-Length", b"2")], b"ok"
    )
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\nx-mixed-case:  Value\tWith ;Stuff\r\ncontent-length: 2\r\n\r\nok"
    )


async def test_the_apps_transfer_encoding_is_replaced_by_the_servers_framing() -> None:
    cycle, connection = make_cycle()
    await send_response(cycle, [(b"transfer-encoding", b"chunked")], b"ab", b"")
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    )

    cycle, connection = make_cycle(http_version="1.0")
    await send_response(cycle, [(b"Transfer-Encoding", b"chunked")], b"ab")
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nab"

    cycle, connection = make_cycle()
    await send_response(cycle, [(b"transfer-encoding", b"gzip"), (b"content-length", b"2")], b"ab")
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nab"


@pytest.mark.parametrize("value", [b"close", b"Close", b"upgrade, CLOSE", b" keep-alive ,close "])
async def test_the_apps_connection_close_closes_the_connection(value: bytes) -> None:
    cycle, connection = make_cycle()
    await send_response(cycle, [(b"connection", value), (b"content-length", b"0")], b"")
    assert not cycle.keep_alive
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


async def test_connection_close_is_said_once() -> None:
    cycle, connection = make_cycle(http_version="1.0", keep_alive=False)
    await send_response(cycle, [(b"connection", b"close"), (b"content-length", b"1")], b"x")
    assert connection.transport.data == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
    )


@pytest.mark.parametrize("value", [b"keep-alive", b"upgrade", b"closed", b"x-close"])
async def test_the_apps_other_connection_values_are_dropped(value: bytes) -> None:
    cycle, connection = make_cycle()
    await send_response(cycle, [(b"Connection", value), (b"content-length", b"0")], b"")
    assert cycle.keep_alive
    assert connection.transport.data == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def test_send_writes_head_and_first_body_in_one_write() -> None:
    cycle, connection = make_cycle()
    await send_response(cycle, [(b"content-length", b"5")], b"hel", b"lo")
    await settle()
    assert connection.transport.calls == [
        [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hel"],
        b"lo",
    ]


async def test_a_head_without_body_ready_in_the_same_turn_goes_out_alone() -> None:
    cycle, connection = make_cycle()
    await cycle.send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    assert connection.transport.calls == []  # held for the body's first piece
    await settle()
    assert connection.transport.calls == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"]
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert connection.transport.calls[1:] == [b"ok"]
    assert cycle.response_complete


async def test_send_refuses_messages_out_of_order() -> None:
    cycle, _ = make_cycle()
    with pytest.raises(RuntimeError, match=r"expected 'http.response.start'"):
        await cycle.send({"type": "http.response.body", "body": b""})
    await send_response(cycle, [(b"content-length", b"0")], b"")
    with pytest.raises(RuntimeError, match="after the response was complete"):
        await cycle.send({"type": "http.response.body", "body": b""})


async def test_respond_after_the_response_started_raises() -> None:
    cycle, _ = make_cycle()
    cycle.respond(200, [], b"", True)
    with pytest.raises(RuntimeError, match="already started"):
        cycle.respond(200, [], b"", False)


async def test_send_waits_for_a_paused_writer_to_drain() -> None:
    cycle, connection = make_cycle()
    connection.paused = True
    sending = asyncio.ensure_future(
        cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    )
    await settle()
    assert not sending.done()
    assert connection.drains == 1
    connection.resume_writing()
    await within(sending)
    assert cycle.response_started


# -- ASGI receive -----------------------------------------------------------------------------


async def test_receive_without_a_body_is_one_empty_message_then_disconnect_after_the_response() -> (
    None
):
    cycle, _ = make_cycle()
    assert await within(cycle.receive()) == {
        "type": "http.request",
        "body": b"",
        "more_body": False,
    }
    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    assert not waiting.done()  # http.disconnect only once there is a reason for it
    cycle.respond(200, [(b"content-length", b"0")], b"", False)
    assert await within(waiting) == {"type": "http.disconnect"}
    assert await within(cycle.receive()) == {"type": "http.disconnect"}


async def test_receive_hands_over_the_body_in_chunks_with_more_body() -> None:
    cycle, connection = make_cycle("POST", has_body=True)
    cycle.feed_body(b"ab")
    cycle.feed_body(b"cd")
    assert await within(cycle.receive()) == {
        "type": "http.request",
        "body": b"abcd",
        "more_body": True,
    }
    assert connection.resumed == [cycle]  # asked for more

    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    assert not waiting.done()
    cycle.feed_body(b"ef")
    assert await within(waiting) == {"type": "http.request", "body": b"ef", "more_body": True}

    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    cycle.end_body()
    assert await within(waiting) == {"type": "http.request", "body": b"", "more_body": False}


async def test_receive_of_the_last_piece_together_with_the_end() -> None:
    cycle, connection = make_cycle("POST", has_body=True)
    cycle.feed_body(b"all")
    cycle.end_body()
    assert await within(cycle.receive()) == {
        "type": "http.request",
        "body": b"all",
        "more_body": False,
    }
    assert connection.resumed == []  # nothing more to read


async def test_receive_after_loss_is_disconnect() -> None:
    cycle, _ = make_cycle("POST", has_body=True)
    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    cycle.lose()
    assert await within(waiting) == {"type": "http.disconnect"}
    assert await within(cycle.receive()) == {"type": "http.disconnect"}


async def test_disconnect_while_waiting_after_the_body() -> None:
    cycle, _ = make_cycle()
    await within(cycle.receive())
    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    cycle.lose()
    assert await within(waiting) == {"type": "http.disconnect"}


# -- 100 Continue ---------------------------------------------------------------------------


async def test_100_continue_is_written_once_when_the_body_is_first_asked_for() -> None:
    cycle, connection = make_cycle("POST", expect_continue=True, has_body=True)
    assert connection.transport.calls == []  # not before the app asks
    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    assert connection.transport.calls == [CONTINUE]
    cycle.feed_body(b"x")
    assert (await within(waiting))["body"] == b"x"
    waiting = asyncio.ensure_future(cycle.receive())
    await settle()
    cycle.feed_body(b"y")
    cycle.end_body()
    assert (await within(waiting))["body"] == b"y"
    assert connection.transport.calls == [CONTINUE]


async def test_no_100_continue_when_not_expected() -> None:
    cycle, connection = make_cycle("POST", expect_continue=False, has_body=True)
    cycle.feed_body(b"x")
    cycle.end_body()
    await within(cycle.receive())
    assert connection.transport.calls == []


async def test_no_100_continue_for_a_request_without_body() -> None:
    cycle, connection = make_cycle("GET", expect_continue=True, has_body=False)
    await within(cycle.receive())
    assert connection.transport.calls == []


async def test_no_100_continue_once_the_response_started() -> None:
    cycle, connection = make_cycle("POST", expect_continue=True, has_body=True)
    cycle.respond(417, [(b"content-length", b"0")], b"", False)
    cycle.lose()
    await within(cycle.receive())
    assert CONTINUE not in connection.transport.data
    assert connection.transport.data.startswith(b"HTTP/1.1 417 ")


# -- losing the client ----------------------------------------------------------------------


async def test_lose_calls_on_disconnect_once() -> None:
    cycle, _ = make_cycle("POST", has_body=True)
    calls: list[str] = []
    cycle.on_disconnect = lambda: calls.append("gone")
    cycle.lose()
    cycle.lose()
    assert calls == ["gone"]
    assert cycle.disconnected


async def test_lose_after_the_response_completed_does_not_call_on_disconnect() -> None:
    cycle, _ = make_cycle()
    calls: list[str] = []
    cycle.on_disconnect = lambda: calls.append("gone")
    cycle.respond(200, [(b"content-length", b"0")], b"", False)
    cycle.lose()
    assert calls == []


async def test_nothing_is_written_after_loss() -> None:
    cycle, connection = make_cycle()
    cycle.lose()
    cycle.respond(200, [], b"x", False)
    await send_response(cycle, [], b"y")
    cycle.write(b"z", False)
    await settle()
    assert connection.transport.calls == []


async def test_a_head_held_for_its_body_is_not_written_after_loss() -> None:
    cycle, connection = make_cycle()
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    cycle.lose()
    await settle()
    assert connection.transport.calls == []


# -- run_app --------------------------------------------------------------------------------


async def test_run_app_tells_the_connection_when_the_app_is_over_even_when_it_fails() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    cycle, connection = make_cycle()
    await run_app(failing, cycle)
    assert connection.finished_cycles == [cycle]
    assert not cycle.response_started
