"""The response to the client (proxy/relay.py): a complete answer in one piece with its length,
a streamed one chunk by chunk, the gateway's headers added and the shadow's tap fed; a body
that breaks or overruns its deadline cuts the response (True) and closes the answer as
failed; someone else's cancellation goes on; the gateway's own error body, exactly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from proxy.asgi import Message, RawHeaders
from proxy.backends.base import Answer
from proxy.deadline import Deadline
from proxy.errors import BadRequest, UpstreamTimeout, error_headers
from proxy.relay import Reply, relay
from proxy.shadow import ResponseTap

pytestmark = pytest.mark.anyio

WHERE = ("route", "backend")


class Sent:
    """An ASGI ``send`` that records its messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


class FakeCycle:
    """What Reply needs of proxy.cycle.Cycle, recording the calls."""

    def __init__(self, paused: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.write_paused = paused
        self.drains = 0

    def respond(self, status: int, headers: RawHeaders, body: bytes, more: bool) -> None:
        self.calls.append(("respond", status, list(headers), body, more))

    def write(self, chunk: bytes, more: bool) -> None:
        self.calls.append(("write", chunk, more))

    async def drain(self) -> None:
        self.drains += 1


class FakeStream:
    """A body that arrives in ``chunks`` after what is ``buffered``; ``complete`` when nothing
    more will arrive. ``fail`` raises after the chunks; ``wait`` blocks after them."""

    def __init__(
        self,
        chunks: list[bytes],
        buffered: bytes = b"",
        complete: bool = False,
        fail: bool = False,
        wait: bool = False,
    ) -> None:
        self.chunks = list(chunks)
        self.buffered = buffered
        self.complete = complete
        self.fail = fail
        self.wait = wait
        self.closed = 0
        #: Set once it waits for a chunk that never comes.
        self.waiting = asyncio.Event()

    @property
    def body_complete(self) -> bool:
        return self.complete

    def take(self) -> bytes:
        taken, self.buffered = self.buffered, b""
        return taken

    async def next_chunk(self) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail:
            raise ConnectionResetError("reset by peer")
        if self.wait:
            self.waiting.set()
            await asyncio.Event().wait()
        return b""

    async def hold(self, limit: int) -> bool:
        raise AssertionError("relay never holds")

    def close(self) -> None:
        self.closed += 1


def tracked(
    status: int,
    headers: RawHeaders,
    body: bytes = b"",
    stream: FakeStream | None = None,
    deadline: Deadline | None = None,
) -> tuple[Answer, list[bool | None]]:
    closes: list[bool | None] = []
    return Answer(status, headers, body, stream, deadline, closes.append), closes


async def test_a_complete_answer_is_one_message_with_its_length() -> None:
    sent = Sent()
    reply = Reply(sent, "rid-1")
    answer, closes = tracked(
        200, [(b"Content-Type", b"text/plain"), (b"X-Request-Id", b"theirs")], b"hello"
    )
    assert await relay(answer, reply, WHERE, _task()) is False
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"x-request-id", b"rid-1"),
                (b"content-length", b"5"),
            ],
        },
        {"type": "http.response.body", "body": b"hello", "more_body": False},
    ]
    assert (reply.started, reply.complete, reply.status) == (True, True, 200)
    assert closes == [False]


async def test_a_complete_answer_through_the_cycle_is_one_respond_call() -> None:
    cycle = FakeCycle()
    reply = Reply(Sent(), "rid-1", cycle)  # type: ignore[arg-type]
    answer, closes = tracked(201, [(b"content-type", b"text/plain")], b"made")
    assert await relay(answer, reply, WHERE, _task()) is False
    assert cycle.calls == [
        (
            "respond",
            201,
            [
                (b"content-type", b"text/plain"),
                (b"x-request-id", b"rid-1"),
                (b"content-length", b"4"),
            ],
            b"made",
            False,
        )
    ]
    assert cycle.drains == 0
    assert reply.complete
    assert closes == [False]


async def test_a_paused_cycle_is_drained_after_each_write() -> None:
    cycle = FakeCycle(paused=True)
    reply = Reply(Sent(), "rid", cycle)  # type: ignore[arg-type]
    answer, _ = tracked(200, [], stream=FakeStream([b"a", b"b"]))
    assert await relay(answer, reply, WHERE, _task()) is False
    assert [call[0] for call in cycle.calls] == ["respond", "write", "write", "write"]
    assert cycle.drains == 4


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_and_no_length_for_204_and_304(status: int) -> None:
    sent = Sent()
    headers = [(b"content-length", b"4"), (b"etag", b'"v1"')]
    answer, closes = tracked(status, headers, b"junk")
    assert await relay(answer, Reply(sent, "rid"), WHERE, _task()) is False
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"etag", b'"v1"'), (b"x-request-id", b"rid")],
        },
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert closes == [False]


async def test_a_bodyless_status_from_a_stream_complete_in_its_buffer_sends_nothing() -> None:
    sent = Sent()
    stream = FakeStream([], buffered=b"oops", complete=True)
    answer, _ = tracked(304, [(b"content-length", b"4")], stream=stream)
    assert await relay(answer, Reply(sent, "rid"), WHERE, _task()) is False
    assert [m.get("body") for m in sent.messages] == [None, b""]
    assert sent.messages[0]["headers"] == [(b"x-request-id", b"rid")]


async def test_a_streamed_answer_is_relayed_chunk_by_chunk() -> None:
    sent = Sent()
    stream = FakeStream([b"one", b"two", b"three"], buffered=b"head")
    answer, closes = tracked(200, [(b"transfer-encoding", b"chunked"), (b"x-a", b"1")], b"", stream)
    reply = Reply(sent, "rid")
    assert await relay(answer, reply, WHERE, _task()) is False
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": 200,
            # No length of the gateway's own; the hop-by-hop framing is the server's.
            "headers": [(b"x-a", b"1"), (b"x-request-id", b"rid")],
        },
        {"type": "http.response.body", "body": b"head", "more_body": True},
        {"type": "http.response.body", "body": b"one", "more_body": True},
        {"type": "http.response.body", "body": b"two", "more_body": True},
        {"type": "http.response.body", "body": b"three", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert reply.complete
    assert closes == [False]
    assert stream.closed == 1


async def test_a_streamed_answer_through_the_cycle_writes_each_chunk() -> None:
    cycle = FakeCycle()
    reply = Reply(Sent(), "rid", cycle)  # type: ignore[arg-type]
    answer, _ = tracked(200, [], stream=FakeStream([b"a", b"b"]))
    assert await relay(answer, reply, WHERE, _task()) is False
    assert cycle.calls == [
        ("respond", 200, [(b"x-request-id", b"rid")], b"", True),
        ("write", b"a", True),
        ("write", b"b", True),
        ("write", b"", False),
    ]


async def test_a_stream_complete_in_its_buffer_is_sent_in_one_piece() -> None:
    sent = Sent()
    stream = FakeStream([b"never read"], buffered=b"all of it", complete=True)
    answer, closes = tracked(200, [(b"content-length", b"9")], stream=stream)
    assert await relay(answer, Reply(sent, "rid"), WHERE, _task()) is False
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"9"), (b"x-request-id", b"rid")],
        },
        {"type": "http.response.body", "body": b"all of it", "more_body": False},
    ]
    assert stream.chunks == [b"never read"]
    assert closes == [False]


async def test_extra_headers_are_appended() -> None:
    sent = Sent()
    reply = Reply(sent, "rid")
    reply.extra_headers = [(b"set-cookie", b"sid=k; Path=/")]
    answer, _ = tracked(200, [(b"set-cookie", b"theirs=1")], b"ok")
    await relay(answer, reply, WHERE, _task())
    assert sent.messages[0]["headers"] == [
        (b"set-cookie", b"theirs=1"),
        (b"x-request-id", b"rid"),
        (b"content-length", b"2"),
        (b"set-cookie", b"sid=k; Path=/"),
    ]


async def test_the_shadow_tap_is_fed_what_the_client_gets() -> None:
    reply = Reply(Sent(), "rid")
    reply.extra_headers = [(b"set-cookie", b"sid=k")]
    tap = reply.tap = ResponseTap(1000)
    answer, _ = tracked(200, [(b"x-a", b"1")], stream=FakeStream([b"b", b"c"], buffered=b"a"))
    await relay(answer, reply, WHERE, _task())
    captured = tap.captured
    assert captured.status == 200
    assert captured.headers == [
        (b"x-a", b"1"),
        (b"x-request-id", b"rid"),
        (b"set-cookie", b"sid=k"),
    ]
    assert bytes(captured.body) == b"abc"
    assert captured.complete


async def test_a_stream_that_breaks_mid_body_cuts_the_response() -> None:
    sent = Sent()
    reply = Reply(sent, "rid")
    stream = FakeStream([b"part"], fail=True)
    answer, closes = tracked(200, [], stream=stream)
    assert await relay(answer, reply, WHERE, _task()) is True
    assert [m.get("body") for m in sent.messages] == [None, b"", b"part"]
    assert all(m.get("more_body", True) for m in sent.messages)  # never ended
    assert (reply.started, reply.complete) == (True, False)
    assert closes == [True]
    assert stream.closed == 1


async def test_a_deadline_expiring_mid_body_cuts_the_response_and_is_absorbed() -> None:
    task = asyncio.current_task()
    assert task is not None
    sent = Sent()
    reply = Reply(sent, "rid")
    deadline = Deadline(task, 0.01)
    answer, closes = tracked(200, [], stream=FakeStream([b"part"], wait=True), deadline=deadline)
    assert await relay(answer, reply, WHERE, _task()) is True
    assert deadline.expired
    assert task.cancelling() == 0  # the cancellation was taken back
    await asyncio.sleep(0)  # and the task goes on
    assert not reply.complete
    assert [m.get("body") for m in sent.messages] == [None, b"", b"part"]
    assert closes == [True]


async def test_a_cancellation_that_is_not_the_deadlines_goes_on() -> None:
    sent = Sent()
    closes: list[bool | None] = []
    deadlines: list[Deadline] = []

    stream = FakeStream([b"x"], wait=True)

    async def relaying() -> bool | None:
        task = asyncio.current_task()
        assert task is not None
        deadline = Deadline(task, 30)
        deadlines.append(deadline)
        answer = Answer(200, [], b"", stream, deadline, closes.append)
        return await relay(answer, Reply(sent, "rid"), WHERE, _task())

    running = asyncio.get_running_loop().create_task(relaying())
    await stream.waiting.wait()
    assert [m.get("body") for m in sent.messages] == [None, b"", b"x"]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert closes == [None]
    assert not deadlines[0].expired
    assert deadlines[0]._handle is None  # closing the answer cancelled its timer


async def test_a_cancellation_with_no_deadline_goes_on() -> None:
    closes: list[bool | None] = []

    stream = FakeStream([], wait=True)

    async def relaying() -> bool | None:
        answer = Answer(200, [], b"", stream, None, closes.append)
        return await relay(answer, Reply(Sent(), "rid"), WHERE, _task())

    running = asyncio.get_running_loop().create_task(relaying())
    await stream.waiting.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert closes == [None]


async def test_the_error_is_the_json_body_of_the_contract() -> None:
    sent = Sent()
    reply = Reply(sent, "req-7")
    await reply.error(BadRequest("bad path: x", detail="for logs only"))
    body = b'{"error":"bad_request","message":"bad path: x","request_id":"req-7"}'
    assert sent.messages == [
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"x-request-id", b"req-7"),
                (b"cache-control", b"no-store"),
            ],
        },
        {"type": "http.response.body", "body": body, "more_body": False},
    ]
    assert sent.messages[0]["headers"] == error_headers(body, "req-7")
    assert (reply.status, reply.complete) == (400, True)


async def test_an_upstream_error_through_the_cycle() -> None:
    cycle = FakeCycle()
    reply = Reply(Sent(), "r", cycle)  # type: ignore[arg-type]
    await reply.error(UpstreamTimeout("backend 'b' did not answer in time", "ReadTimeout"))
    ((kind, status, headers, body, more),) = cycle.calls
    assert (kind, status, more) == ("respond", 504, False)
    assert json.loads(body) == {
        "error": "upstream_timeout",
        "message": "backend 'b' did not answer in time",
        "request_id": "r",
    }
    assert headers == error_headers(body, "r")


def _task() -> asyncio.Task[object]:
    task = asyncio.current_task()
    assert task is not None
    return task
