"""Property tests over real sockets: whatever an upstream or a client sends, every response a
client gets is exactly one well-framed response, built only from the bytes of the one message
it answers, or the gateway's own error.

Upstream side: hypothesis builds responses with every framing (a length, chunked with
extensions and trailers, ended by the close), interim 1xx responses before them, statuses in
and out of range, heads past the limits, and bytes after the end (a second response, garbage).
Client side: hypothesis builds pipelined requests, valid and broken (bad syntax, both framings,
bad Host, trailers naming request headers, upgrade offers, Expect). One gateway and one
recording upstream serve every example; the client reads with its own parser (h11 for a
response, llhttp for a pipelined stream), never the gateway's framing."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Exchange, RawUpstream, response, running_gateway, write_table

pytestmark = pytest.mark.sockets

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
TOKEN_TAIL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
) | st.just("a b")


@dataclass
class Scripted:
    """The upstream's behaviour for the current example, shared with its thread."""

    reply: bytes = b""
    close: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, Scripted, RawUpstream]]:
    scripted = Scripted()

    async def script(exchange: Exchange) -> None:
        if exchange.request.target == "/next":
            await exchange.send(response(body=b"NEXT"))
            return
        if exchange.request.target.startswith("/echo"):
            await exchange.send(echo(exchange))
            return
        with scripted.lock:
            reply, close = scripted.reply, scripted.close
        await exchange.send(reply)
        if close:
            exchange.close()

    upstream = RawUpstream(script).start()
    config = write_table(
        tmp_path_factory.mktemp("fuzz") / "routes.yaml",
        {"up": f"{{url: '{upstream.url}', timeout: 2s}}"},
    )
    with running_gateway(config) as (_, servers):
        yield servers.port("gateway"), scripted, upstream
    upstream.stop()


def echo(exchange: Exchange) -> bytes:
    """What the upstream saw of a request, as JSON: its request id, headers and body."""
    seen = exchange.request
    body = json.dumps(
        {"id": seen.header("x-request-id"), "headers": seen.headers, "body": seen.body.hex()}
    ).encode()
    return response(headers=[("Content-Length", str(len(body)))], body=body)


# ---- the upstream's responses ---------------------------------------------------------------


@dataclass
class Reply:
    data: bytes
    close: bool
    #: "exact": the client gets this status, these headers and this body; "error": a 502;
    #: "cut": the body stops short (a 502 before the head, or a prefix and a closed connection).
    expect: str
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def __repr__(self) -> str:  # heads past the limit are 70 KB: show their start
        data = self.data if len(self.data) < 2000 else self.data[:2000] + b"..."
        return f"Reply({data!r}, close={self.close}, expect={self.expect!r})"


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    interim = draw(
        st.lists(
            st.sampled_from(
                [
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
                ]
            ),
            max_size=2,
        )
    )
    broken_status = draw(st.sampled_from([None] * 6 + [b"000", b"999", b"600", b"101", b"20x"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 299, 301, 304, 404, 418, 500, 503, 599]))
    bodyless = status in (204, 304)
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["X-", "Set-Cookie", "x-", "Cache-Control"]).flatmap(
                    lambda p: TOKEN_TAIL.map(lambda t: p + t if p.endswith("-") else p)
                ),
                VALUE,
            ),
            max_size=8,
        )
    )
    hop = draw(st.sampled_from([[], [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")]]))
    framing = draw(
        st.sampled_from(
            ["length"] if bodyless else ["length", "chunked", "close", "cut", "ambiguous"]
        )
    )
    body = b"" if bodyless else draw(st.binary(max_size=300))
    oversize = draw(st.sampled_from([None] * 8 + ["fields", "bytes"]))
    extra = draw(
        st.sampled_from(
            [
                b"",
                b"",
                b"HTTP/1.1 302 Found\r\nSet-Cookie: session=ATTACKER\r\nContent-Length: 0\r\n\r\n",
                b"\x00garbage\r\n\r\n",
            ]
        )
    )
    lines = [*headers, *hop]
    if oversize == "fields":
        lines += [(f"X-F{n}", "v") for n in range(101)]
    elif oversize == "bytes":
        lines.append(("X-Big", "b" * 70000))
    close = framing in ("close", "cut") or draw(st.booleans())
    wire_body = body
    if framing == "length":
        lines.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        lines.append(("Transfer-Encoding", "chunked"))
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        pieces, rest = [], body
        for size in sizes:
            if rest:
                pieces.append(rest[:size])
                rest = rest[size:]
        if rest:
            pieces.append(rest)
        extension = draw(st.sampled_from([b"", b";name=value"]))
        trailers = draw(st.sampled_from([b"", b"Set-Cookie: trailer=1\r\nX-Trailer: 2\r\n"]))
        wire_body = (
            b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces)
            + b"0\r\n"
            + trailers
            + b"\r\n"
        )
    elif framing == "cut":
        lines.append(("Content-Length", str(len(body) + 10)))
    elif framing == "ambiguous":
        lines += [("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")]
    start = b"HTTP/1.1 " + (broken_status or str(status).encode()) + b" Whatever\r\n"
    head = start + b"".join(f"{n}: {v}\r\n".encode() for n, v in lines) + b"\r\n"
    # Bytes after the end of a response (never for one ended by the close, or cut short).
    data = (
        b"".join(interim) + head + wire_body + (extra if framing in ("length", "chunked") else b"")
    )
    if broken_status or oversize or framing == "ambiguous":
        return Reply(data, close, "error")
    expected = [(n.lower(), v) for n, v in lines if n.lower() not in HOP_BY_HOP]
    if bodyless:
        expected = [(n, v) for n, v in expected if n != "content-length"]
    return Reply(data, close, "cut" if framing == "cut" else "exact", status, expected, body)


def read_response(sock: socket.socket) -> tuple[h11.Response | None, bytes, bool]:
    """One response as h11 reads it: the head, the body, and whether it ended cleanly."""
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/fuzz", headers=[("Host", "gw")]))
    connection.send(h11.EndOfMessage())
    head, body = None, b""
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:  # closed mid-body: h11 says so this way
            return head, body, False
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(65536)
            except (ConnectionError, TimeoutError):
                data = b""
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, body, True
        elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
            return head, body, False


def fetch_next(port: int, sock: socket.socket | None = None) -> bytes:
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: gw\r\n\r\n")
        head, body, complete = read_response(sock)
        assert head is not None
        assert complete
        return body
    finally:
        if own:
            sock.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(reply=replies())
def test_every_upstream_response_reaches_the_client_exactly_or_as_a_502(
    gateway: tuple[int, Scripted, RawUpstream], reply: Reply
) -> None:
    port, scripted, _ = gateway
    with scripted.lock:
        scripted.reply, scripted.close = reply.data, reply.close
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET /fuzz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: fz-1\r\n\r\n")
        head, body, complete = read_response(sock)
        assert head is not None, "no response at all"
        got = [(n.decode(), v.decode("latin-1")) for n, v in head.headers]
        if reply.expect == "error" or (reply.expect == "cut" and head.status_code == 502):
            assert head.status_code == 502
            assert json.loads(body)["error"] == "upstream_unavailable"
            assert complete
        elif reply.expect == "cut":
            assert head.status_code == reply.status
            assert not complete
            assert reply.body.startswith(body)
            return  # the connection was closed: that is the signal
        else:
            assert complete, "the response did not end as framed"
            assert head.status_code == reply.status
            framing = (
                [("transfer-encoding", "chunked")]
                if ("content-length" not in dict(reply.headers) and reply.status not in (204, 304))
                else []
            )
            assert got == [*reply.headers, ("x-request-id", "fz-1"), *framing]
            assert body == reply.body
        # The next request, on this connection and on a new one, gets its own answer: no
        # byte of the fuzzed response is left to be read as someone else's.
        assert fetch_next(port, sock) == b"NEXT"
        assert fetch_next(port) == b"NEXT"
    finally:
        sock.close()


# ---- the client's requests ------------------------------------------------------------------

VALID_HOSTS = ["gw", "GW", "gw.", "gw:8080", "127.0.0.1", "[::1]:80"]


@dataclass
class Sent:
    number: int
    data: bytes
    #: "valid": the upstream must see it, faithfully; "refused": the gateway answers it with
    #: its own error and the upstream sees nothing of it.
    kind: str
    #: Header fields (lower-case name, value) the client sent in the head.
    headers: list[tuple[str, str]]
    body: bytes
    #: Field names that appear only in a trailer or after it: never upstream.
    foreign: set[str]


@st.composite
def requests(draw: st.DrawFn, number: int) -> Sent:
    rid = f"rq-{number}"
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    target = "/echo" + draw(st.sampled_from(["", "/a", "/a/../b", "/%7Euser", "?q=1&r", "?"]))
    host = draw(st.sampled_from(VALID_HOSTS))
    fields = [("Host", host), ("X-Request-Id", rid)]
    fields += draw(st.lists(st.tuples(TOKEN_TAIL.map(lambda t: "X-" + t), VALUE), max_size=5))
    fields += draw(
        st.sampled_from(
            [
                [],
                [("Connection", "keep-alive")],
                [
                    ("Connection", "upgrade, http2-settings"),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
                ],
                [("Connection", "upgrade"), ("Upgrade", "websocket")],
                [("Connection", "x-hop, cookie"), ("X-Hop", "1"), ("Cookie", "a=1")],
                [("X_Under", "1")],
            ]
        )
    )
    body = draw(st.sampled_from([None, b"", b"hello", bytes(range(40))]))
    framing = draw(st.sampled_from(["length", "chunked"])) if body is not None else None
    foreign: set[str] = set()
    wire_body = b""
    if framing == "length":
        assert body is not None
        if draw(st.booleans()):
            fields.append(("Expect", "100-continue"))
        fields.append(("Content-Length", str(len(body))))
        wire_body = body
    elif framing == "chunked":
        assert body is not None
        fields.append(("Transfer-Encoding", "chunked"))
        trailer = draw(st.sampled_from([b"", b"Cookie: session=admin\r\nX-Trailer-Only: 1\r\n"]))
        if trailer:
            foreign |= {"x-trailer-only"}
        wire_body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n" + trailer
        wire_body += b"\r\n"
    broken = draw(
        st.sampled_from(
            [None] * 10
            + ["space before colon", "both framings", "bad host", "trace", "gzip", "http/2"]
        )
    )
    kind = "valid" if broken is None else "refused"
    version = "HTTP/2.0" if broken == "http/2" else "HTTP/1.1"
    if broken == "space before colon":
        fields.append(("X-Bad ", "1"))
    elif broken == "both framings":
        fields += [("Content-Length", "3"), ("Transfer-Encoding", "chunked")]
        wire_body = b"0\r\n\r\n"
    elif broken == "bad host":
        fields[0] = ("Host", draw(st.sampled_from(["a b", "x, gw", "gw:80:80", "gw/x", ""])))
    elif broken == "trace":
        method = "TRACE"
    elif broken == "gzip":
        fields = [(n, v) for n, v in fields if n.lower() not in ("content-length", "expect")]
        if framing != "chunked":
            fields.append(("Transfer-Encoding", "gzip, chunked"))
            wire_body = b"0\r\n\r\n"
        else:
            fields = [
                (n, "gzip, chunked") if n == "Transfer-Encoding" else (n, v) for n, v in fields
            ]
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    data = head.encode("latin-1") + b"\r\n" + wire_body
    sent_headers = [(n.lower(), v) for n, v in fields]
    return Sent(number, data, kind, sent_headers, body or b"", foreign)


@dataclass
class Received:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class _Responses:
    """llhttp over the client's byte stream: the responses in order, interim ones skipped."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Received] = []
        self._current: Received | None = None
        self._headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._current = Received(self.parser.get_status_code(), self._headers)

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        assert self._current is not None
        if self._current.status >= 200:
            self.done.append(self._current)


def read_all(sock: socket.socket) -> list[Received]:
    parsed = _Responses()
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionError:
            data = b""
        if not data:
            break
        parsed.parser.feed_data(data)
    return parsed.done


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(*(requests(i) for i in range(n)))))
def test_pipelined_requests_reach_the_upstream_faithfully_and_are_answered_in_order(
    gateway: tuple[int, Scripted, RawUpstream], sent: tuple[Sent, ...]
) -> None:
    port, _, upstream = gateway
    before = len(upstream.requests)
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        sock.sendall(
            b"".join(s.data for s in sent) + b"GET /echo HTTP/1.1\r\nHost: gw\r\n"
            b"X-Request-Id: last\r\nConnection: close\r\n\r\n"
        )
        answers = read_all(sock)
    finally:
        sock.close()
    by_id = {s.number: s for s in sent}
    position = -1
    closed = False
    for answer in answers:
        assert not closed, "a response after one that closed the connection"
        closed = (answer.header(b"connection") or b"").lower() == b"close"
        rid = (answer.header(b"x-request-id") or b"").decode()
        if rid == "last":
            position = len(sent)
            continue
        number = int(rid[3:]) if rid.startswith("rq-") else None
        if number is None:
            # Refused by the connection before it was parsed: it ends the connection.
            assert answer.status in (400, 405, 505)
            assert closed
            assert json.loads(answer.body)["error"] in (
                "bad_request",
                "method_not_allowed",
                "http_version_not_supported",
            )
            continue
        assert number > position, "answered out of order"
        for skipped in range(position + 1, number):
            assert by_id[skipped].kind != "valid", f"request {skipped} was never answered"
        position = number
        request = by_id[number]
        if request.kind == "refused":
            assert answer.status in (400, 405, 501)
            assert json.loads(answer.body)["request_id"] == rid
            continue
        assert answer.status == 200, answer.body
        seen = json.loads(answer.body)
        assert seen["id"] == [rid]
        assert bytes.fromhex(seen["body"]) == request.body
        names = {n for n, _ in seen["headers"]}
        assert not names & request.foreign
        allowed = {(n, v) for n, v in request.headers} | {("cookie", "a=1")}
        for name, value in seen["headers"]:
            if name in (
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "via",
                "host",
                "content-length",
                "transfer-encoding",
                "traceparent",  # the gateway's: the fuzzed requests carry none
            ):
                continue
            assert (name, value) in allowed, f"{name}: {value} is not from request {number}"
    # Every request the upstream saw is one the client sent as valid, and only once.
    ids = [r.header("x-request-id") for r in upstream.requests[before:]]
    valid = {f"rq-{s.number}" for s in sent if s.kind == "valid"} | {"last"}
    assert all(len(i) == 1 and i[0] in valid for i in ids)
    assert len({i[0] for i in ids}) == len(ids)
    if not closed or position == len(sent):
        assert all(f"rq-{s.number}" in {i[0] for i in ids} for s in sent if s.kind == "valid")
