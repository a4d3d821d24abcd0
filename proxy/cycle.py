"""One request and its response on an HTTP/1.1 connection, as ASGI sees them.

:class:`Cycle` is what the ASGI app's ``receive`` and ``send`` talk to. It holds the request
body as the connection's parser delivers it, and frames the response on the wire: a
``Content-Length`` when the app gives one, chunked for an HTTP/1.1 client, or ended by closing
the connection for an HTTP/1.0 client, which must never get chunked (RFC 9112 §6.1). The head
of a response is written together with its first piece of body, in one call, when both are
ready in the same turn of the event loop. It decides nothing about the connection beyond
whether it may carry another request; :mod:`proxy.connection` owns the connection.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

from proxy.asgi import Message, RawHeaders, Scope
from proxy.tunnel import Tunnel

log = logging.getLogger("strangler.http")

#: Request body bytes held for the app before reading from the client pauses.
BODY_HIGH_WATER = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-zA-Z-]+\Z")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODYLESS_STATUSES = frozenset({204, 304})
_STATUS_LINES: dict[int, bytes] = {}

#: How a response's body is delimited on the wire.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)


def status_line(status: int) -> bytes:
    """``HTTP/1.1 404 Not Found\\r\\n``; an unregistered status gets an empty reason phrase."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")
    return line


class Connection(Protocol):
    """What a cycle needs of its connection (implemented by :mod:`proxy.connection`)."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def write_paused(self) -> bool: ...

    async def drain(self) -> None: ...

    def resume_reading_for(self, cycle: Cycle) -> None: ...

    def finished(self, cycle: Cycle) -> None: ...

    def switch(self, cycle: Cycle, head: bytes, tunnel: Tunnel) -> None: ...


class Cycle:
    """A request's body as it arrives and its response as it leaves."""

    __slots__ = (
        "_connection",
        "_delivered",
        "_expect_continue",
        "_framing",
        "_head",
        "_remaining",
        "_waiter",
        "body",
        "body_complete",
        "disconnected",
        "empty_query",
        "head_only",
        "http10",
        "keep_alive",
        "on_disconnect",
        "response_complete",
        "response_started",
        "scope",
        "status",
        "task",
        "upgrade",
    )

    def __init__(
        self,
        connection: Connection,
        scope: Scope,
        *,
        keep_alive: bool,
        expect_continue: bool,
        has_body: bool,
    ) -> None:
        self._connection = connection
        self.scope = scope
        self.head_only = scope["method"] == "HEAD"
        self.http10 = scope["http_version"] == "1.0"
        #: Whether the connection may carry another request after this one.
        self.keep_alive = keep_alive
        self._expect_continue = expect_continue and has_body
        #: Request body bytes not yet handed to the app.
        self.body = bytearray()
        self.body_complete = not has_body
        #: Whether the app has been handed the body's last piece.
        self._delivered = False
        self._waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        #: Called once when the client goes away mid-request (the gateway cancels its work):
        #: the connection knows at once, where an app would need a task waiting on receive().
        self.on_disconnect: Callable[[], None] | None = None
        #: The task running the app for this request (set by the connection).
        self.task: asyncio.Task[None] | None = None
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self._head: bytes | None = None
        self._framing = _NONE
        self._remaining = 0
        #: A WebSocket handshake's Upgrade value (the connection parses nothing after it).
        self.upgrade: bytes | None = None
        #: The target ended in "?" with nothing after it (ASGI's query_string is empty either
        #: way; the upstream gets the target as sent).
        self.empty_query = False

    # -- fed by the connection ----------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        self.body += data
        self._wake()

    def end_body(self) -> None:
        self.body_complete = True
        self._wake()

    def lose(self) -> None:
        """The client went away, or its request turned out broken mid-body."""
        self.disconnected = True
        self._wake()
        callback, self.on_disconnect = self.on_disconnect, None
        if callback is not None and not self.response_complete:
            callback()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._connection.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- ASGI receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._delivered:
            if self._expect_continue and not self.response_started:
                # The client waits for this before it sends the body (RFC 9110 §10.1.1); it is
                # sent only once the app asks for the body, so a refusal needs no body at all.
                self._expect_continue = False
                self._connection.transport.write(_CONTINUE)
            while not self.body and not self.body_complete and not self.disconnected:
                self._connection.resume_reading_for(self)
                await self._wait()
            if not self.disconnected:
                chunk = bytes(self.body)
                self.body.clear()
                more = not self.body_complete
                self._delivered = not more
                if more:
                    self._connection.resume_reading_for(self)
                return {"type": "http.request", "body": chunk, "more_body": more}
        while not self.disconnected and not self.response_complete:
            await self._wait()
        return {"type": "http.disconnect"}

    # -- ASGI send ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        connection = self._connection
        if connection.write_paused() and not self.disconnected:
            await connection.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self._begin(message["status"], message.get("headers", ()), True)
            # A head waits for the body's first piece so that both go out in one write; if
            # the app has none ready in this turn of the loop, the head goes out alone.
            connection.loop.call_soon(self._flush_head)
            return
        if kind != "http.response.body" or self.response_complete:
            raise RuntimeError(f"unexpected {kind!r} after the response was complete")
        self.write(message.get("body", b""), message.get("more_body", False))

    # -- the gateway's own way in: no messages, no checks of what it already checked ----------

    def respond(self, status: int, headers: RawHeaders, body: bytes, more: bool) -> None:
        """Start the response and write its first piece of body, in one write. ``headers``
        must be lower-case names with valid values (the gateway's are: llhttp parsed them, or
        the gateway made them)."""
        if self.disconnected:
            return
        if self.response_started:
            raise RuntimeError("the response has already started")
        self._begin(status, headers, False)
        self.write(body, more)

    def switch(self, headers: RawHeaders, tunnel: Tunnel) -> None:
        """Answer a WebSocket handshake with 101 and ``headers`` (lower-case names, valid
        values), and hand the connection to ``tunnel``."""
        if self.upgrade is None or self.response_started or self.disconnected:
            raise RuntimeError("not a WebSocket handshake waiting for its answer")
        self.response_started = self.response_complete = True
        self.status = 101
        lines = [status_line(101)]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self._connection.switch(self, b"".join(lines), tunnel)

    @property
    def write_paused(self) -> bool:
        """Whether the client reads slower than the response is written (then :meth:`drain`)."""
        return self._connection.write_paused()

    async def drain(self) -> None:
        if self._connection.write_paused() and not self.disconnected:
            await self._connection.drain()

    def write(self, body: bytes, more: bool) -> None:
        """The response's next piece of body (the last when ``more`` is false)."""
        if self.disconnected:
            return
        self._write_body(body, more)
        if not more:
            self.response_complete = True
            self._wake()
            self._connection.finished(self)

    def _begin(self, status: int, headers: Any, check: bool) -> None:
        if not 200 <= status <= 599:
            raise RuntimeError(f"status {status} is not a final response status")
        self.response_started = True
        self.status = status
        self._expect_continue = False
        lines = [status_line(status)]
        length: int | None = None
        bodyless = status in _BODYLESS_STATUSES
        for name, value in headers:
            if check:
                name = name.lower()
                if not _TOKEN.match(name) or b"\r" in value or b"\n" in value or b"\0" in value:
                    raise RuntimeError(f"invalid response header {name!r}")
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise RuntimeError("invalid or repeated Content-Length in the response")
                length = int(value)
                if bodyless:
                    continue
            elif name == b"transfer-encoding":
                continue  # the framing is the server's to decide
            elif name == b"connection":
                if b"close" in [t.strip() for t in value.lower().split(b",")]:
                    self.keep_alive = False
                continue
            lines += (name, b": ", value, b"\r\n")
        if not self.body_complete:
            # The client is still sending a body nobody will read: the connection cannot
            # carry another request (its bytes would be read as one).
            self.keep_alive = False
        if bodyless:
            self._framing = _NONE
        elif length is not None:
            self._framing = _NONE if self.head_only else _LENGTH
            self._remaining = length
        elif self.head_only:
            self._framing = _NONE
        elif self.http10:
            self._framing = _UNTIL_CLOSE
            self.keep_alive = False
        else:
            lines.append(b"transfer-encoding: chunked\r\n")
            self._framing = _CHUNKED
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        elif self.http10:
            # HTTP/1.0 closes by default: a connection kept alive says so (RFC 9112 §9.3).
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)

    def _flush_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self.disconnected:
                self._connection.transport.write(head)

    def _write_body(self, body: bytes, more: bool) -> None:
        framing = self._framing
        pieces: list[bytes] = []
        if self._head is not None:
            pieces.append(self._head)
            self._head = None
        if framing == _CHUNKED:
            if body:
                pieces += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                pieces.append(b"0\r\n\r\n")
        elif framing == _LENGTH:
            self._remaining -= len(body)
            if self._remaining < 0:
                raise RuntimeError("response body longer than its Content-Length")
            if not more and self._remaining:
                raise RuntimeError("response body shorter than its Content-Length")
            if body:
                pieces.append(body)
        elif framing == _UNTIL_CLOSE and body:
            pieces.append(body)
        if len(pieces) == 1:
            self._connection.transport.write(pieces[0])
        elif pieces:
            self._connection.transport.writelines(pieces)


async def run_app(app: Callable[..., Any], cycle: Cycle) -> None:
    """Run the ASGI app for one cycle; the connection learns when it is over, whatever
    happened (an app that fails or returns early gets its response finished for it)."""
    try:
        await app(cycle.scope, cycle.receive, cycle.send)
    except Exception as exc:
        scope = cycle.scope
        log.error("the app failed on %s %s", scope["method"], scope["path"], exc_info=exc)
    finally:
        cycle._connection.finished(cycle)
