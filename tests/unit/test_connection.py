"""The gateway's HTTP/1.1 connection (proxy/connection.py), in process: bytes fed to the
protocol as uvicorn would feed them, and the exact bytes it writes back. Requests are answered
one at a time and in order, trailers never reach the app, an upgrade offer is served as plain
HTTP/1.1 with its body, refusals come after the responses ahead of them and close lingering,
and the head deadline, the idle deadline and the head bound are kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from proxy import connection as connection_module
from proxy.connection import HeadGuard, HttpConnection, connection_class
from proxy.cycle import BODY_HIGH_WATER, status_line
from proxy.server import server_config
from proxy.settings import Limits

pytestmark = pytest.mark.anyio

REQUEST_ID = "00000000-0000-4000-8000-000000000000"


class FakeTransport(asyncio.Transport):
    """A client socket: what the protocol writes, and what it does to the connection."""

    def __init__(self, *, can_write_eof: bool = True) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof_written = False
        self.reading = True
        self._can_write_eof = can_write_eof

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "a write after close"
        self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 50123), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return self._can_write_eof

    def write_eof(self) -> None:
        self.eof_written = True


class State:
    """uvicorn's server state, as much of it as a connection uses."""

    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.tasks: set[Any] = set()
        self.total_requests = 0
        self.default_headers: list[Any] = []


class RecordingApp:
    """Reads the whole body and answers ``METHOD PATH BODY`` with a Content-Length; a few paths
    behave otherwise (see __call__)."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.received: list[list[dict[str, Any]]] = []

    def gate(self, path: str) -> asyncio.Event:
        event = self.gates[path] = asyncio.Event()
        return event

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        path = scope["path"]
        if path in self.gates:
            await self.gates[path].wait()
        if path == "/fail":
            raise ValueError("the app broke")
        if path == "/refuse":  # answers without reading the body
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        messages: list[dict[str, Any]] = []
        self.received.append(messages)
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if path == "/truncated":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            return
        payload = f"{scope['method']} {path} ".encode() + body
        headers = [(b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def answer(method: str, path: str, body: bytes = b"", *, close: bool = False) -> bytes:
    """What RecordingApp's response looks like on the wire."""
    payload = f"{method} {path} ".encode() + body
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(payload)
    if close:
        head += b"connection: close\r\n"
    return head + b"\r\n" + payload


def refusal(status: bytes, code: str, message: str) -> bytes:
    """The connection's own JSON error, as the bytes of a whole response."""
    body = f'{{"error":"{code}","message":"{message}","request_id":"{REQUEST_ID}"}}'.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"x-request-id: %s\r\n"
        b"cache-control: no-store\r\n"
        b"connection: close\r\n\r\n" % (len(body), REQUEST_ID.encode())
    ) + body


@pytest.fixture(autouse=True)
def fixed_request_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection's refusals name a fresh uuid4; a fixed one makes their bytes exact."""
    monkeypatch.setattr(connection_module.uuid, "uuid4", lambda: uuid.UUID(REQUEST_ID))


@pytest.fixture
def app() -> RecordingApp:
    return RecordingApp()


class Client:
    def __init__(self, protocol: HttpConnection, transport: FakeTransport, state: State) -> None:
        self.protocol = protocol
        self.transport = transport
        self.state = state

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)


def connect(
    app: RecordingApp,
    guard: HeadGuard | None = None,
    *,
    keep_alive: float = 5.0,
    transport: FakeTransport | None = None,
) -> Client:
    config = server_config(app, 30.0, guard)
    config.timeout_keep_alive = keep_alive
    config.load()
    state = State()
    protocol = config.http_protocol_class(config, state, {})
    transport = transport or FakeTransport()
    protocol.connection_made(transport)
    return Client(protocol, transport, state)


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], limit: float = 3.0) -> None:
    """Real time passes (short timers fire) until ``condition`` holds; a test fails rather than
    hang if it never does."""
    for _ in range(int(limit / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


# -- plain requests -----------------------------------------------------------------------


async def test_a_request_its_scope_and_its_response(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: example.test\r\nX-Mixed: Value\r\n\r\n")
    await settle()
    assert client.written == answer("GET", "/a b")
    (scope,) = app.scopes
    assert scope["type"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["path"] == "/a b"
    assert scope["raw_path"] == b"/a%20b"
    assert scope["query_string"] == b"x=1"
    assert scope["headers"] == [(b"host", b"example.test"), (b"x-mixed", b"Value")]
    assert scope["client"] == ("192.0.2.7", 50123)
    assert scope["server"] == ("127.0.0.1", 8080)
    assert scope["scheme"] == "http"
    assert not client.transport.closed
    assert client.state.total_requests == 1
    assert client.protocol in client.state.connections


async def test_a_body_split_across_reads(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    await settle()
    assert client.written == b""
    client.send(b"def")
    await settle()
    assert client.written == answer("POST", "/p", b"abcdef")


async def test_pipelined_requests_are_answered_in_order_one_at_a_time(app: RecordingApp) -> None:
    gate = app.gate("/slow")
    client = connect(app)
    client.send(
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
    )
    await settle()
    assert client.written == b""
    assert [scope["path"] for scope in app.scopes] == ["/slow"]  # the others wait their turn
    assert not client.transport.reading  # requests are queued: reading pauses
    gate.set()
    await settle()
    assert client.written == answer("GET", "/slow") + answer("GET", "/b") + answer(
        "POST", "/c", b"xyz"
    )
    assert [scope["path"] for scope in app.scopes] == ["/slow", "/b", "/c"]
    assert client.transport.reading
    assert client.state.total_requests == 3


async def test_trailer_fields_never_reach_the_app(app: RecordingApp) -> None:
    client = connect(app)
    client.send(
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: evil\r\nHost: evil.test\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await settle()
    assert client.written == answer("POST", "/t", b"abcde") + answer("GET", "/after")
    assert app.scopes[0]["headers"] == [(b"host", b"a"), (b"transfer-encoding", b"chunked")]
    assert app.scopes[1]["headers"] == [(b"host", b"a")]


async def test_reading_pauses_while_a_body_piles_up_and_resumes_when_the_app_reads(
    app: RecordingApp,
) -> None:
    gate = app.gate("/p")
    client = connect(app)
    length = 2 * BODY_HIGH_WATER
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length)
    client.send(b"x" * (BODY_HIGH_WATER + 1))
    await settle()
    assert not client.transport.reading
    gate.set()
    await settle()
    assert client.transport.reading  # the app took what was held
    client.send(b"y" * (length - BODY_HIGH_WATER - 1))
    await settle()
    body = b"x" * (BODY_HIGH_WATER + 1) + b"y" * (length - BODY_HIGH_WATER - 1)
    assert client.written == answer("POST", "/p", body)


async def test_shutdown_closes_an_idle_connection_at_once(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    client.protocol.shutdown()
    assert client.transport.closed
    assert client.written == answer("GET", "/a")


async def test_shutdown_lets_the_current_response_finish_with_connection_close(
    app: RecordingApp,
) -> None:
    gate = app.gate("/slow")
    client = connect(app)
    client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    client.protocol.shutdown()
    assert not client.transport.closed
    gate.set()
    await settle()
    assert client.written == answer("GET", "/slow", close=True)
    assert client.transport.closed
    assert [scope["path"] for scope in app.scopes] == ["/slow"]


# -- upgrade offers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 5\r\n", b"hello"),
        (b"Transfer-Encoding: chunked\r\n", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
    ],
)
@pytest.mark.parametrize("split", [False, True])
async def test_an_upgrade_offer_with_a_body_is_served_with_it_and_what_follows_is_parsed(
    app: RecordingApp, framing: bytes, body: bytes, split: bool
) -> None:
    head = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        + framing
        + b"\r\n"
    )
    after = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    client = connect(app)
    if split:
        for piece in (head, body[:3], body[3:], after):
            client.send(piece)
            await settle()
    else:
        client.send(head + body + after)
    await settle()
    assert client.written == answer("POST", "/up", b"hello") + answer("GET", "/next")
    assert [scope["path"] for scope in app.scopes] == ["/up", "/next"]


async def test_an_upgrade_offer_other_than_websocket_is_plain_http(app: RecordingApp) -> None:
    client = connect(app)
    client.send(
        b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await settle()
    assert client.written == answer("GET", "/up") + answer("GET", "/next")
    assert [scope["extensions"]["strangler.cycle"].upgrade for scope in app.scopes] == [None] * 2


@pytest.mark.parametrize(
    ("upgrade", "offered"),
    [(b"websocket", b"websocket"), (b"h2c, WebSocket", b"WebSocket")],
)
async def test_a_websocket_handshake_answered_without_101_closes_the_connection(
    app: RecordingApp, upgrade: bytes, offered: bytes
) -> None:
    # Nothing after a handshake is HTTP: a request behind it is never served.
    client = connect(app)
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
        + upgrade
        + b"\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await settle()
    assert client.written == answer("GET", "/ws", close=True)
    assert client.transport.closed
    assert [scope["path"] for scope in app.scopes] == ["/ws"]
    assert app.scopes[0]["extensions"]["strangler.cycle"].upgrade == offered


@pytest.mark.parametrize(
    "head",
    [
        # Not a handshake the gateway tunnels: served as plain HTTP/1.1.
        b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /ws HTTP/1.0\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    ],
)
async def test_only_a_get_offering_websocket_with_connection_upgrade_is_a_handshake(
    app: RecordingApp, head: bytes
) -> None:
    client = connect(app)
    client.send(head)
    await settle()
    assert len(app.scopes) == 1
    assert app.scopes[0]["extensions"]["strangler.cycle"].upgrade is None


# -- refusals -------------------------------------------------------------------------------

BAD_REQUEST = refusal(b"400 Bad Request", "bad_request", "the request is not valid HTTP/1.1")


async def test_a_parse_error_after_a_good_pipelined_request_is_answered_after_it(
    app: RecordingApp,
) -> None:
    gate = app.gate("/a")
    client = connect(app)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n")
    await settle()
    assert client.written == b""  # the 400 waits for the response ahead of it
    gate.set()
    await settle()
    assert client.written == answer("GET", "/a") + BAD_REQUEST
    assert client.transport.eof_written
    assert [scope["path"] for scope in app.scopes] == ["/a"]


async def test_a_broken_request_alone_is_answered_400_at_once(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    await settle()
    assert client.written == BAD_REQUEST
    assert app.scopes == []


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            refusal(
                b"505 HTTP Version Not Supported",
                "http_version_not_supported",
                "HTTP/2.0 is not supported; use HTTP/1.1",
            ),
        ),
        (
            b"GET / HTTP/0.9\r\n\r\n",
            refusal(b"400 Bad Request", "bad_request", "HTTP/0.9 requests are not served"),
        ),
        (
            b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            refusal(b"405 Method Not Allowed", "method_not_allowed", "CONNECT is not allowed"),
        ),
    ],
)
async def test_requests_the_connection_refuses_itself(
    app: RecordingApp, request_bytes: bytes, expected: bytes
) -> None:
    client = connect(app)
    client.send(request_bytes + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert client.written == expected
    assert app.scopes == []
    assert client.transport.eof_written


async def test_connect_after_a_good_request_is_refused_after_its_answer(app: RecordingApp) -> None:
    client = connect(app)
    client.send(
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n\x16\x03\x01"
    )
    await settle()
    assert client.written == answer("GET", "/a") + refusal(
        b"405 Method Not Allowed", "method_not_allowed", "CONNECT is not allowed"
    )


async def test_bytes_after_connection_close_are_not_served(app: RecordingApp) -> None:
    client = connect(app)
    client.send(
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
        b"this is not HTTP\r\n\r\n"
    )
    await settle()
    assert client.written == answer("GET", "/a", close=True)  # and no 400 for the garbage
    assert [scope["path"] for scope in app.scopes] == ["/a"]
    assert client.transport.closed
    assert not client.transport.eof_written  # nothing unread: a plain close


async def test_an_http10_request_closes_after_its_response(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    await settle()
    assert client.written == answer("GET", "/a", close=True)
    assert [scope["path"] for scope in app.scopes] == ["/a"]
    assert client.transport.closed


async def test_a_refused_expect_continue_body_is_never_read_as_a_request(
    app: RecordingApp,
) -> None:
    client = connect(app)
    client.send(
        b"POST /refuse HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 38\r\n\r\n"
    )
    await settle()
    assert client.written == (status_line(413) + b"content-length: 0\r\nconnection: close\r\n\r\n")
    assert client.transport.eof_written  # lingering: the client is still sending
    client.send(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert [scope["path"] for scope in app.scopes] == ["/refuse"]


async def test_100_continue_goes_out_when_the_app_reads_the_body(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    await settle()
    assert client.written == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"ok")
    await settle()
    assert client.written == b"HTTP/1.1 100 Continue\r\n\r\n" + answer("POST", "/p", b"ok")
    assert not client.transport.closed


async def test_an_app_that_fails_before_answering_gets_a_500(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET /fail HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert client.written == refusal(
        b"500 Internal Server Error", "internal_error", "the gateway failed to answer"
    )
    assert [scope["path"] for scope in app.scopes] == ["/fail"]


async def test_a_truncated_response_closes_the_connection(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"GET /truncated HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert client.written == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n"  # no last chunk
    )
    assert client.transport.closed
    assert [scope["path"] for scope in app.scopes] == ["/truncated"]


async def test_a_body_broken_mid_request_is_a_disconnect_then_a_400(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await settle()
    client.send(b"zz\r\nnot a chunk\r\n")
    await settle()
    assert app.received[0] == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert client.written == BAD_REQUEST


async def test_a_client_gone_mid_body_is_a_disconnect_for_the_app(app: RecordingApp) -> None:
    client = connect(app)
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    await settle()
    client.protocol.connection_lost(None)
    await settle()
    assert app.received[0] == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert client.written == b""
    assert client.protocol not in client.state.connections


# -- deadlines: real time, short timers -------------------------------------------------------

REQUEST_TIMEOUT = refusal(
    b"408 Request Timeout", "request_timeout", "the request head did not arrive in time"
)


async def test_a_head_that_does_not_arrive_in_time_is_answered_408(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(timeout=0.05))
    client.send(b"GET / HTTP/1.1\r\nHost: a")
    await until(lambda: client.transport.eof_written)
    assert client.written == REQUEST_TIMEOUT
    assert app.scopes == []


async def test_a_connection_that_sends_nothing_is_answered_408(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(timeout=0.05))
    await until(lambda: client.transport.eof_written)
    assert client.written == REQUEST_TIMEOUT


async def test_an_idle_kept_alive_connection_is_closed(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(timeout=10.0), keep_alive=0.05)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await until(lambda: client.transport.closed)
    assert client.written == answer("GET", "/a")  # closed quietly, no 408
    assert not client.transport.eof_written


async def test_idle_time_does_not_count_toward_the_next_head(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(timeout=0.05), keep_alive=10.0)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    await asyncio.sleep(0.2)  # idle, for longer than a head may take
    assert not client.transport.closed
    client.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert client.written == answer("GET", "/a") + answer("GET", "/b")


async def test_the_head_deadline_starts_at_the_first_byte_of_a_kept_alive_request(
    app: RecordingApp,
) -> None:
    client = connect(app, HeadGuard(timeout=0.05), keep_alive=10.0)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    await asyncio.sleep(0.1)
    client.send(b"GET /b HTTP/1.1\r\n")
    await until(lambda: client.transport.eof_written)
    assert client.written == answer("GET", "/a") + REQUEST_TIMEOUT


async def test_a_head_begun_during_the_previous_response_keeps_its_head_deadline(
    app: RecordingApp,
) -> None:
    gate = app.gate("/slow")
    client = connect(app, HeadGuard(timeout=0.05), keep_alive=10.0)
    client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n")
    await settle()
    gate.set()  # the response is done well within the second head's deadline
    await settle()
    await until(lambda: client.transport.eof_written or client.transport.closed, limit=1.0)
    assert client.written == answer("GET", "/slow") + REQUEST_TIMEOUT


async def test_neither_deadline_runs_while_the_app_is_answering(app: RecordingApp) -> None:
    gate = app.gate("/slow")
    client = connect(app, HeadGuard(timeout=0.05), keep_alive=0.05)
    client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.sleep(0.2)
    assert client.written == b""
    assert not client.transport.closed
    gate.set()
    await settle()
    assert client.written == answer("GET", "/slow")
    await until(lambda: client.transport.closed)  # then idle, then closed


async def test_the_watchdog_called_early_changes_nothing(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(timeout=10.0), keep_alive=10.0)
    client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    client.protocol._watchdog()  # before either deadline: it looks, and sets itself again
    client.send(b"GET /b HTTP/1.1\r\nHost: a\r\n")
    client.protocol._watchdog()
    client.send(b"\r\n")
    await settle()
    assert client.written == answer("GET", "/a") + answer("GET", "/b")
    assert not client.transport.closed
    client.protocol.connection_lost(None)


# -- the head bound ---------------------------------------------------------------------------

HEADERS_TOO_LARGE = refusal(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    "the request head is longer than 64 bytes",
)


async def test_a_head_longer_than_the_bound_is_answered_431(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(max_bytes=64))
    client.send(b"GET / HTTP/1.1\r\n")
    client.send(b"X-Long: " + b"a" * 40)
    await settle()
    assert client.written == b""  # 40 + 8 bytes counted: within the bound
    client.send(b"a" * 40)
    await settle()
    assert client.written == HEADERS_TOO_LARGE
    client.send(b"\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")  # discarded
    await settle()
    assert client.written == HEADERS_TOO_LARGE
    assert app.scopes == []


async def test_a_head_within_the_bound_in_pieces_is_served(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(max_bytes=64))
    for piece in (b"GET /a HTTP/1.1\r\n", b"Host: a\r\n", b"X-A: 1\r\n", b"\r\n"):
        client.send(piece)
    await settle()
    assert client.written == answer("GET", "/a")


async def test_the_bound_is_per_head_not_per_connection(app: RecordingApp) -> None:
    client = connect(app, HeadGuard(max_bytes=64))
    for _ in range(5):
        client.send(b"GET /a HTTP/1.1\r\n")
        client.send(b"Host: a\r\nX-Filler: " + b"f" * 20 + b"\r\n")
        client.send(b"\r\n")
        await settle()
    assert client.written == answer("GET", "/a") * 5


# -- lingering close --------------------------------------------------------------------------


async def test_a_refused_connection_lingers_then_closes(
    app: RecordingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "LINGER_SECONDS", 0.05)
    client = connect(app)
    client.send(b"GARBAGE\r\n\r\n")
    await settle()
    assert client.written == BAD_REQUEST
    assert client.transport.eof_written
    assert not client.transport.closed  # still reading, discarding
    client.send(b"more bytes the client was still sending")
    await until(lambda: client.transport.closed)
    assert client.written == BAD_REQUEST


async def test_lingering_resumes_paused_reading(
    app: RecordingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "LINGER_SECONDS", 0.05)
    gate = app.gate("/refuse")
    client = connect(app)
    length = 2 * BODY_HIGH_WATER
    client.send(b"POST /refuse HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length)
    client.send(b"x" * (BODY_HIGH_WATER + 1))
    await settle()
    assert not client.transport.reading  # a body piles up unread
    gate.set()
    await settle()
    assert client.written == (status_line(413) + b"content-length: 0\r\nconnection: close\r\n\r\n")
    assert client.transport.eof_written
    assert client.transport.reading  # so the rest of the body is read and discarded
    await until(lambda: client.transport.closed)


async def test_without_write_eof_a_refusal_closes_at_once(app: RecordingApp) -> None:
    client = connect(app, transport=FakeTransport(can_write_eof=False))
    client.send(b"GARBAGE\r\n\r\n")
    await settle()
    assert client.written == BAD_REQUEST
    assert client.transport.closed


def test_the_head_bound_for_limits_is_above_what_the_limits_let_through() -> None:
    limits = Limits()
    guard = HeadGuard.for_limits(3.0, limits)
    assert guard == HeadGuard(3.0, limits.max_uri_bytes + limits.max_header_bytes + 16 * 1024)


async def test_connection_class_carries_its_guard(app: RecordingApp) -> None:
    guard = HeadGuard(timeout=1.5, max_bytes=1234)
    cls = connection_class(guard)
    assert issubclass(cls, HttpConnection)
    assert cls.guard is guard
    assert HttpConnection.guard == HeadGuard()
