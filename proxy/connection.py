"""HTTP/1.1 connections on the gateway's listeners: parsing, order, and every refusal a
connection makes before an app is involved.

uvicorn serves the listeners and runs this protocol in place of its own httptools protocol
(``http=`` in its config). That protocol was replaced, not patched, because what had to change
was its core: it merged a chunked request's trailer fields into the request's headers (the
parser reports them through the same callback), answered a parse error in a pipelined request
before the response to the request ahead of it, kept a connection open after refusing a
request whose body the client was still to send (``Expect: 100-continue``), so that body was
read as the next request, stalled on a request that offered an upgrade it does not perform
(``Upgrade: h2c`` with a body: llhttp stops at the end of the head and the body was never read)
and dropped requests pipelined after one, and chunked responses to HTTP/1.0 clients.

Here requests are parsed by llhttp (httptools) in strict mode and answered one at a time, in
order. Trailer fields are dropped (RFC 9110 §6.5.1 allows it; ASGI has no way to pass them on).
A WebSocket handshake is passed to the app with the Upgrade value on its cycle, and nothing
after it is parsed: the upstream's 101 makes the connection a tunnel (:meth:`switch`), any
other answer closes it. Any other offered upgrade (``h2c``) is ignored (RFC 9110 §7.8) and the
request served as plain HTTP/1.1. A request's head must arrive within the head timeout and fit
in the head bound; a connection the gateway refuses gets its JSON error and a lingering close
(the client's further bytes are read and discarded for a while), so that the answer is read
rather than lost to a reset.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import urllib.parse
import uuid
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any

import httptools

from proxy.asgi import RawHeaders
from proxy.cycle import BODY_HIGH_WATER, Cycle, run_app, status_line
from proxy.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    HttpVersionNotSupported,
    InternalError,
    MethodNotAllowed,
    RequestTimeout,
    error_body,
    error_headers,
)
from proxy.settings import DEFAULT_HEAD_TIMEOUT, Limits
from proxy.tunnel import CLIENT, Tunnel

log = logging.getLogger("strangler.http")

DEFAULT_MAX_HEAD_BYTES = 1024 * 1024
#: How long a refused connection's input is read and discarded before it is closed.
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class HeadGuard:
    """How long a request's head may take to arrive, and how long it may be."""

    timeout: float = DEFAULT_HEAD_TIMEOUT
    max_bytes: int = DEFAULT_MAX_HEAD_BYTES

    @classmethod
    def for_limits(cls, timeout: float, limits: Limits) -> HeadGuard:
        """A bound above what the gateway's own limits let through: the longest request line
        and header fields it accepts, with room for the bytes around them."""
        return cls(timeout, limits.max_uri_bytes + limits.max_header_bytes + 16 * 1024)


def error_response(error: GatewayError, request_id: str | None = None) -> bytes:
    """The gateway's JSON error as the bytes of a whole response that closes the connection."""
    request_id = request_id or str(uuid.uuid4())
    body = error_body(error, request_id)
    lines = [status_line(error.status)]
    lines += [name + b": " + value + b"\r\n" for name, value in error_headers(body, request_id)]
    lines.append(b"connection: close\r\n\r\n")
    return b"".join(lines) + body


class HttpConnection(asyncio.Protocol):
    """One client connection. uvicorn builds it with its config and server state."""

    guard = HeadGuard()

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.keep_alive_timeout: float = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        # The request being parsed: its head, then the cycle its body goes to.
        self._url = b""
        self._headers: RawHeaders = []
        self._in_head = False
        self._expect_continue = False
        self._parsing: Cycle | None = None
        # The request being answered, and those parsed behind it (pipelining).
        self._current: Cycle | None = None
        self._pending: collections.deque[Cycle] = collections.deque()
        # Bytes of the current head received so far (None while a body arrives).
        self._head_bytes: int | None = 0
        self._began = False
        # One timer per connection guards both deadlines: a head arriving (the head timeout)
        # and an idle keep-alive connection. It is moved only when a deadline comes sooner
        # than it is set for, and otherwise fires, looks, and sets itself again: a request
        # on a kept-alive connection costs no timer at all.
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0
        self._guarding = _NOTHING
        self._since = 0.0
        self._linger_timer: TimerHandle | None = None
        #: No request after the current one is served: it said close, or the server stops.
        self._no_more = False
        #: Nothing more is parsed: the last request has been read whole, or input was refused.
        self._stopped = False
        #: A refusal waiting for the responses ahead of it.
        self._refusal: GatewayError | None = None
        self._closing = False
        self._read_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        #: Set while an ignored upgrade offer's body is being read (see _after_upgrade_offer).
        self._skipping_head = False
        #: A WebSocket handshake waiting for its answer, and the bytes the client sent after
        #: it (they belong to the tunnel, if the upstream switches protocols).
        self._upgrading: Cycle | None = None
        self._early = bytearray()
        #: The connection is a tunnel's now (proxy/tunnel.py): its protocol is the tunnel's.
        self._tunnelled = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.server = (str(local[0]), int(local[1]))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        # The first request's head must arrive within the head timeout of the connection.
        self._guard(_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._closing = True
        self._disarm()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._current is not None:
            self._current.lose()
        self._pending.clear()
        self._wake_writers()

    def eof_received(self) -> bool | None:
        # The client closed its side. As NGINX does (499, "client prematurely closed"), that is
        # taken as the client going away: the connection closes and a request in progress is
        # abandoned.
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers()

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._hold(data)
            return
        if self._stopped:
            return  # after the last request, or while lingering: discarded
        in_head = self._head_bytes is not None
        self._began = False
        self._feed(self.parser, data)
        if self._head_bytes is None or self._stopped:
            return
        # A chunk counts whole toward the head it continues. When a head began inside it, the
        # share that is head is unknown (bodies and pipelined requests come first), so it is
        # counted from the next chunk: the bound holds to within one read.
        if in_head and not self._began:
            self._head_bytes += len(data)
        if self._head_bytes > self.guard.max_bytes:
            self._refuse(
                HeadersTooLarge(f"the request head is longer than {self.guard.max_bytes} bytes")
            )

    def _feed(self, parser: httptools.HttpRequestParser, data: bytes) -> None:
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade_offer(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            if self._no_more:
                self._stopped = True  # bytes after a request that closes the connection
            else:
                log.info("invalid request from %s: %s", self._peer(), exc)
                self._refuse(BadRequest("the request is not valid HTTP/1.1", detail=str(exc)))

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._skipping_head or self._stopped:
            return
        self._began = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._in_head = True
        self._expect_continue = False
        if self._guarding != _HEAD:
            # The first byte of a request on a kept-alive connection: its head deadline starts.
            self._guard(_HEAD)

    def on_url(self, url: bytes) -> None:
        if not self._skipping_head:
            self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field: never merged into the head (RFC 9110 §6.5.2)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self._skipping_head:
            self._skipping_head = False
            return
        self._in_head = False
        self._guarding = _NOTHING
        if self._stopped or self._no_more:
            return  # the connection is closing: a request after that is not served
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        refusal = _refusal(version, method)
        if refusal is not None:
            self._refuse(refusal)
            return
        try:
            parsed = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            self._refuse(BadRequest("the request target is not a valid URL"))
            return
        raw_path: bytes = parsed.path or b""
        path = raw_path.decode("latin-1")
        headers = self._headers
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": "",
            "path": urllib.parse.unquote(path) if "%" in path else path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "headers": headers,
        }
        # llhttp says an HTTP/1.0 request is kept alive when it sends "Connection: keep-alive".
        keep_alive = parser.should_keep_alive()
        has_body = _has_body(headers)
        upgrade = None
        if method == "GET" and version == "1.1" and not has_body and parser.should_upgrade():
            upgrade = websocket_offer(headers)
        cycle = Cycle(
            self,
            scope,
            keep_alive=keep_alive and upgrade is None,
            expect_continue=self._expect_continue and version == "1.1",
            has_body=has_body,
        )
        scope["extensions"] = {"strangler.cycle": cycle}
        if parsed.query is None and b"?" in self._url:
            # ASGI's query_string cannot tell "/a?" from "/a"; the target is forwarded as sent.
            cycle.empty_query = True
        if upgrade is not None:
            # A WebSocket handshake: nothing after it is parsed as HTTP. The upstream's 101
            # makes the connection a tunnel; any other answer is relayed and then closes it.
            cycle.upgrade = upgrade
            self._upgrading = cycle
            self._no_more = self._stopped = True
        self._parsing = cycle if has_body else None
        if not keep_alive:
            # Whatever follows a request that closes the connection is not read as requests.
            self._no_more = True
            self._stopped = not has_body
        if self._current is None:
            self._start(cycle)
        else:
            self._pending.append(cycle)
            self._update_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self._parsing
        if cycle is None:
            return
        cycle.feed_body(body)
        if len(cycle.body) > BODY_HIGH_WATER:
            self._update_reading()

    def on_message_complete(self) -> None:
        cycle = self._parsing
        if cycle is not None and self.parser.should_upgrade():
            # llhttp ends an upgrade offer's message at its head; its body comes next and is
            # read by _after_upgrade_offer.
            return
        self._head_bytes = 0
        if self._no_more:
            self._stopped = True
        if cycle is not None:
            self._parsing = None
            cycle.end_body()

    # -- upgrade offers -----------------------------------------------------------------------

    def _after_upgrade_offer(self, rest: bytes) -> None:
        """llhttp stopped after the head of a request offering an upgrade (``Upgrade: h2c``,
        ``websocket``, ...), which is served as plain HTTP/1.1 instead. Its body, if it has
        one, is framed as the head said: a fresh parser is given a head with that framing
        alone, so that llhttp reads the body exactly as it would have, and then parses
        whatever follows as the next request."""
        if self._refusal is not None:
            return  # a CONNECT, refused: what follows is not HTTP
        if self._upgrading is not None:
            self._hold(rest)  # a WebSocket handshake's: the tunnel's, if there is one
            return
        cycle = self._parsing
        if cycle is not None:
            self.parser = httptools.HttpRequestParser(self)
            self._skipping_head = True
            self.parser.feed_data(_framing_head(cycle.scope["headers"]))
        if rest and not self._stopped:
            self._feed(self.parser, rest)

    # -- one request at a time --------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self._current = cycle
        task = cycle.task = self.loop.create_task(run_app(self.app, cycle))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    def finished(self, cycle: Cycle) -> None:
        """The cycle's response is complete, or its app returned or failed without completing
        it (then the connection is finished for it: a 500 before any byte, else a close)."""
        if cycle is not self._current:
            return
        self._current = None
        self.server_state.total_requests += 1
        if self._closing:
            return
        if not cycle.response_complete:
            if cycle.response_started:
                self._close()  # a truncated response must not look complete
                return
            if self._refusal is None and not cycle.disconnected:
                self._refusal = InternalError("the gateway failed to answer")
            if self._refusal is None:
                self._close()
                return
            self._pending.clear()
            self._answer_refusal()
            return
        if not cycle.keep_alive:
            # The response said "connection: close": nothing more is answered.
            if cycle.body_complete and not self._pending and self._refusal is None:
                self._close()
            else:
                self._linger()
            return
        if self._pending:
            self._start(self._pending.popleft())
            self._update_reading()
        elif self._refusal is not None:
            self._answer_refusal()
        elif self._no_more:
            self._close()
        else:
            self._update_reading()
            if self._guarding != _HEAD:
                # Idle, unless the next request's head has begun arriving meanwhile: that head
                # keeps its own deadline.
                self._guard(_IDLE)

    # -- WebSocket handshakes ------------------------------------------------------------------

    def _hold(self, data: bytes) -> None:
        """Bytes after a handshake, before its answer: kept for the tunnel, and reading pauses
        once they pass the body's high-water mark (a client should send nothing yet)."""
        self._early += data
        if len(self._early) > BODY_HIGH_WATER and not self._read_paused and not self._closing:
            self._read_paused = True
            self.transport.pause_reading()

    def switch(self, cycle: Cycle, head: bytes, tunnel: Tunnel) -> None:
        """The upstream switched protocols: ``head`` (the 101) goes to the client, and the
        connection becomes ``tunnel``'s client side."""
        if cycle is not self._upgrading or self._closing:
            raise RuntimeError("no WebSocket handshake is waiting on this connection")
        self._upgrading = None
        self._tunnelled = True
        self._disarm()
        self.transport.write(head)
        early, self._early = bytes(self._early), bytearray()
        self._read_paused = False  # the tunnel decides from now on
        tunnel.attach(CLIENT, self.transport, early, self._write_paused, self.connection_lost)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the current response.
        A tunnel goes on until the drain's end, when its task is cancelled."""
        if self._tunnelled:
            return
        self._no_more = True
        self._pending.clear()
        if self._current is None:
            self._close()
        else:
            self._current.keep_alive = False

    # -- refusals -----------------------------------------------------------------------------

    def _refuse(self, error: GatewayError) -> None:
        """Stop reading requests; answer ``error`` once the responses ahead of it are sent."""
        self._disarm()
        self._head_bytes = None
        if self._refusal is not None or self._closing:
            return
        self._no_more = self._stopped = True
        self._refusal = error
        broken = self._parsing
        if broken is not None:
            # The request whose body was arriving is broken: its app stops reading it, and one
            # still waiting its turn is never started.
            self._parsing = None
            broken.lose()
            if self._pending and self._pending[-1] is broken:
                self._pending.pop()
        if self._current is None:
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        error = self._refusal
        assert error is not None
        if self._closing:
            return
        self.transport.write(error_response(error))
        self._linger()

    def _linger(self) -> None:
        """Close without losing what was written. Closing a socket with unread input makes the
        kernel reset the connection, and a client still sending would lose the answer; so, as
        NGINX's lingering close, the write side is shut and what arrives is discarded for a
        while."""
        self._closing = self._no_more = self._stopped = True
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self._read_paused:
            transport.resume_reading()
            self._read_paused = False
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    # -- timers and flow control ------------------------------------------------------------

    def _close(self) -> None:
        if not self._closing:
            self._closing = self._no_more = self._stopped = True
            self._disarm()
            self.transport.close()

    def _guard(self, what: int) -> None:
        """From now on the watchdog guards ``what``: a head arriving, or an idle connection."""
        now = self.loop.time()
        self._guarding, self._since = what, now
        deadline = now + (self.guard.timeout if what == _HEAD else self.keep_alive_timeout)
        if self._timer is None or self._timer_at > deadline:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._watchdog)

    def _disarm(self) -> None:
        self._guarding = _NOTHING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watchdog(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self.loop.time()
        if self._guarding == _HEAD:
            deadline = self._since + self.guard.timeout
            if now >= deadline:
                self._refuse(RequestTimeout("the request head did not arrive in time"))
                return
        elif self._guarding == _IDLE:
            deadline = self._since + self.keep_alive_timeout
            if now >= deadline:
                if self._current is None:
                    self._close()
                return
        else:
            deadline = now + min(self.guard.timeout, self.keep_alive_timeout)
        self._arm(deadline)

    def _update_reading(self) -> None:
        """Reading pauses while requests wait behind the current one, or a body piles up
        unread by its app; it resumes when neither holds."""
        parsing = self._parsing
        pause = bool(self._pending) or (parsing is not None and len(parsing.body) > BODY_HIGH_WATER)
        if pause != self._read_paused and not self._closing:
            self._read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def resume_reading_for(self, cycle: Cycle) -> None:
        if self._read_paused and cycle is self._parsing:
            self._update_reading()

    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()
        await self._drained

    def _wake_writers(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"


#: What the connection's watchdog guards.
_NOTHING, _HEAD, _IDLE = range(3)


def _refusal(version: str, method: str) -> GatewayError | None:
    """What the connection answers itself instead of serving a request, if anything."""
    if version not in ("1.1", "1.0"):
        if version.startswith("0."):
            return BadRequest("HTTP/0.9 requests are not served")
        return HttpVersionNotSupported(f"HTTP/{version} is not supported; use HTTP/1.1")
    if method == "CONNECT":
        # A tunnel to anywhere is no gateway's business (NGINX answers 405 too).
        return MethodNotAllowed("CONNECT is not allowed")
    return None


def websocket_offer(headers: RawHeaders) -> bytes | None:
    """The Upgrade value of a request that offers ``websocket`` (llhttp has checked that
    Connection nominates ``upgrade``), or None: any other token (``h2c``...) is ignored and the
    request served as plain HTTP/1.1 (docs/forwarding.md, "Upgrades")."""
    for name, value in headers:
        if name == b"upgrade":
            for token in value.split(b","):
                token = token.strip()
                if token.lower() == b"websocket":
                    return token
    return None


def _has_body(headers: RawHeaders) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _framing_head(headers: RawHeaders) -> bytes:
    """A request head that frames a body as ``headers`` do, and says nothing else."""
    for name, _ in headers:
        if name == b"transfer-encoding":
            return b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    for name, value in headers:
        if name == b"content-length":
            return b"PUT / HTTP/1.1\r\nContent-Length: " + value.strip() + b"\r\n\r\n"
    return b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


def connection_class(guard: HeadGuard) -> type[HttpConnection]:
    """The protocol class for a listener, with its own head deadline and size bound."""
    return type("HttpConnection", (HttpConnection,), {"guard": guard})
