"""The HTTP/1.1 client under every ``url:`` backend: asyncio protocols, llhttp parsing, and a
connection pool whose cost per request does not grow with its size.

A request goes out as an :class:`Outgoing` (method, target, headers, body) and comes back as an
:class:`UpstreamResponse` (status, headers, then body chunks): plain objects, built once, with
nothing on the way that the gateway does not use. httpx's models cost more than the rest of the
exchange together (bench/README.md); the httpx API is kept where it serves, around this client,
in :mod:`proxy.backends.adapters`.

A pooled connection learns that it went bad when it happens, from its protocol's callbacks
(bytes or EOF arriving while idle), so taking one from the pool is a list pop. The request goes
out framed exactly as its headers say (Content-Length, or chunked when it has a body without
one); the response body is passed on transfer-decoded (chunked, and a gzip or deflate transfer
coding under it) but not content-decoded; a response that runs past its end or breaks its
framing is never reused. What a response is made of is decided here and nowhere else: parsing
stops at the end of the response, so bytes an upstream sends after it (a second response in the
same write) can never add fields to it; trailer fields are dropped, never merged into the head
(RFC 9110 §6.5.2); a head is bounded in fields and bytes (:class:`HeadLimits`, per backend); a
status outside 100-599, or a 101 nobody asked for, is a broken response; a 101 switching to
``websocket`` is the head of a tunnel when the request was a handshake (the connection is then
the tunnel's: :meth:`UpstreamResponse.switch`). Failures are httpx's exception types
(ConnectError, ConnectTimeout, WriteError, RemoteProtocolError), which
:mod:`proxy.backends.errors` translates for every backend.

Deadlines are not this module's: the caller bounds the whole exchange (one timer per request,
which cancels the waiting task); the transport closes what a cancelled exchange was using.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import certifi
import httptools
import httpx

from proxy.asgi import RawHeaders
from proxy.table.model import DEFAULT_MAX_RESPONSE_HEADER_BYTES, DEFAULT_MAX_RESPONSE_HEADERS
from proxy.tunnel import UPSTREAM, Tunnel

#: Idle connections kept per upstream (host, port); more are closed when returned.
MAX_IDLE_PER_ORIGIN = 256
#: An idle connection older than this is closed rather than reused: the upstream may be
#: closing it at that very moment (httpx's default).
KEEPALIVE_EXPIRY = 5.0
#: Response bytes buffered before reading from the upstream pauses (the client is slower).
READ_BUFFER_HIGH = 256 * 1024
#: Bytes beyond a head's limit received before it is judged too large, for the status line
#: and line ends that the limit (names and values) does not count.
_HEAD_SLACK = 16 * 1024

#: Reads of what is left in a reset connection's socket (64 KiB each) before giving up on it.
_LEFT_READS = 16

#: (scheme, host, port).
Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """How large a response head an upstream may send: header fields, and the bytes of their
    names and values (a backend's ``max_response_headers`` and ``max_response_header_bytes``)."""

    max_headers: int = DEFAULT_MAX_RESPONSE_HEADERS
    max_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES


@dataclass(slots=True)
class Outgoing:
    """A request as it goes on the wire."""

    method: str
    #: The request target: path, and ``?query`` when there is one.
    target: bytes
    #: Lower-case names, values byte for byte; ``host`` among them.
    headers: RawHeaders
    #: Streamed as it arrives; None for a request without a body.
    body: AsyncIterable[bytes] | None = None
    #: Whether it may be sent a second time when a reused connection closes unanswered:
    #: idempotent, and without a body (a streamed body cannot be sent again).
    replayable: bool = False
    #: A WebSocket handshake: a 101 switching to ``websocket`` is its expected answer.
    upgrade: bool = False


class Transport:
    """The process's pool of upstream connections, shared by every backend."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(
        self,
        origin: Origin,
        outgoing: Outgoing,
        limits: HeadLimits,
        connect_timeout: float | None,
    ) -> UpstreamResponse:
        """Send ``outgoing`` and return once the response head has arrived."""
        connection = self._take(origin)
        if connection is not None:
            try:
                return await connection.exchange(outgoing, limits, self)
            except _NothingReceived:
                # The upstream closed this idle connection just as it was reused, before any
                # byte of an answer: a request that may be sent twice is sent again, once, on a
                # new connection (as Go's client and NGINX's proxy_next_upstream do).
                connection.close()
                if not outgoing.replayable:
                    raise
            except BaseException:
                connection.close()
                raise
        connection = await self._connect(origin, connect_timeout)
        try:
            return await connection.exchange(outgoing, limits, self)
        except BaseException:
            connection.close()
            raise

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_EXPIRY:
                return connection
            connection.close()
        return None

    def give_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: Origin, limit: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            context = self._ssl
        try:
            async with asyncio.timeout(limit):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc.strerror or exc}") from exc
        # uvloop may call connection_made only after create_connection has returned.
        connection.transport = transport
        return connection

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One upstream connection: sends a request, feeds its response to the parser, and tells
    the pool whether it can carry another."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.closed = False
        #: The response being read; None while idle (then any byte received spoils it).
        self._response: UpstreamResponse | None = None
        self._spoiled = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    @property
    def reusable(self) -> bool:
        return not (self.closed or self._spoiled)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            # Bytes nobody asked for: a late body, or a broken upstream. Never reuse this.
            self._spoiled = True
            self.close()
            return
        response.feed(data)

    def eof_received(self) -> bool | None:
        if self._response is not None:
            self._response.end_of_stream()
        self._spoiled = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        response = self._response
        if exc is not None and response is not None and not response.complete:
            self._read_what_is_left(response)
        self.closed = True
        self._wake_writer()
        if response is not None:
            response.end_of_stream()

    def _read_what_is_left(self, response: UpstreamResponse) -> None:
        """Read what the kernel still holds for a connection that failed mid-request.

        An upstream that answers an upload without reading it (a 401 or 413 to a large POST)
        and closes makes its kernel reset the connection; the gateway's next write fails with
        EPIPE or ECONNRESET, and uvloop (as asyncio's selector loop) then closes the transport
        without reading the answer already waiting in the socket. The kernel keeps those bytes
        readable after the reset, and both loops close the socket only once connection_lost
        has returned: so they are read here, and the answer is relayed instead of a 502.
        Plain TCP only: under TLS the bytes would need the TLS layer that is gone."""
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return
        for _ in range(_LEFT_READS):
            try:
                data = os.read(fd, 65536)
            except OSError:  # nothing more (EAGAIN), or the reset itself
                return
            if not data:
                return
            response.feed(data)
            if response.complete or response.failed:
                return

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def _wake_writer(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- one exchange -----------------------------------------------------------------------

    async def exchange(
        self, outgoing: Outgoing, limits: HeadLimits, pool: Transport
    ) -> UpstreamResponse:
        response = self._response = UpstreamResponse(
            self, pool, outgoing.method == "HEAD", limits, outgoing.upgrade
        )
        body = outgoing.body
        chunked = False
        headers = outgoing.headers
        lines = [outgoing.method.encode("ascii"), b" ", outgoing.target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
            if name == b"transfer-encoding":
                chunked = True
        line_ends = len(headers) + 2
        if body is not None and not chunked and not _has_length(headers):
            lines.append(b"transfer-encoding: chunked\r\n")
            chunked = True
            line_ends += 1
        lines.append(b"\r\n")
        head = b"".join(lines)
        # One look for the whole head: a CR or LF inside a name, value or target would end a
        # line early and smuggle a header (or a request) past the gateway.
        if head.count(b"\n") != line_ends or head.count(b"\r") != line_ends:
            raise httpx.LocalProtocolError("the request head contains CR or LF in a field")
        self._write(head)
        if body is not None:
            try:
                await self._send_body(body, chunked)
            except httpx.WriteError as exc:
                # The upstream stopped reading the body. It may have answered first (a 413
                # before the end of an upload, then a close): that answer is the one to pass
                # on. The connection is not reused either way.
                self._spoiled = True
                try:
                    await response.head()
                except httpx.HTTPError:
                    raise exc from None
                return response
        await response.head()
        return response

    async def _send_body(self, body: AsyncIterable[bytes], chunked: bool) -> None:
        async for chunk in body:
            if not chunk:
                continue
            self._write(b"%X\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if self._write_paused:
                await self._drain()
        if chunked:
            self._write(b"0\r\n\r\n")
        if self._write_paused:
            await self._drain()

    def _write(self, data: bytes) -> None:
        # uvloop raises on a write to a transport the peer has closed (asyncio would drop it).
        transport = self.transport
        assert transport is not None
        if self.closed or transport.is_closing():
            raise httpx.WriteError("the upstream closed the connection")
        try:
            transport.write(data)
        except RuntimeError as exc:
            raise httpx.WriteError(f"the upstream closed the connection: {exc}") from None

    async def _drain(self) -> None:
        while self._write_paused:
            if self.closed:
                raise httpx.WriteError("the upstream closed the connection")
            self._drained = self.loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def finished(self, response: UpstreamResponse, pool: Transport) -> None:
        """The response was read to its end or abandoned: pool or close the connection."""
        self._response = None
        if response.clean and self.reusable:
            pool.give_back(self)
        else:
            self.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self._spoiled = True
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class UpstreamResponse:
    """A response as llhttp parses it: the head, then the body, chunk by chunk. Read it with
    :meth:`next_chunk` until it returns ``b""``, or take what has arrived with :meth:`take`;
    :meth:`close` hands the connection back (or closes it) and must always be called."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_decoder",
        "_error",
        "_head_done",
        "_head_only",
        "_head_received",
        "_head_size",
        "_interim",
        "_keep_alive",
        "_limits",
        "_parser",
        "_paused",
        "_pool",
        "_received",
        "_rest",
        "_tail",
        "_upgrade",
        "_wake",
        "closed",
        "complete",
        "headers",
        "overrun",
        "reason",
        "status",
        "switched",
    )

    def __init__(
        self,
        connection: _Connection,
        pool: Transport,
        head_only: bool,
        limits: HeadLimits,
        upgrade: bool = False,
    ) -> None:
        self._connection = connection
        self._upgrade = upgrade
        #: The upstream answered the handshake with 101: what follows its head is the other
        #: protocol's, kept in ``_rest`` until the tunnel takes the connection.
        self.switched = False
        self._rest = bytearray()
        #: Undoes a transfer coding other than chunked (gzip, deflate); ``_tail`` is its input
        #: not yet decoded (decoding stops at the read buffer's size: a small coded body may
        #: decode to a very large one).
        self._decoder: Any = None
        self._tail = b""
        self._pool = pool
        self._head_only = head_only
        self._limits = limits
        self._parser = httptools.HttpResponseParser(self)
        self.headers: RawHeaders = []
        #: Bytes of header names and values so far, and bytes received while in the head.
        self._head_size = 0
        self._head_received = 0
        self.reason = b""
        self.status = 0
        self._head_done = False
        self._interim = False
        self.complete = False
        #: Bytes arrived past the end of the response: the connection must not be reused.
        self.overrun = False
        self._keep_alive = True
        self._error: Exception | None = None
        self._received = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def clean(self) -> bool:
        return self.complete and not self.overrun and self._error is None and self._keep_alive

    # -- fed by the connection --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._received = True
        if self.switched:
            self._hold(data)
            return
        if self.complete:
            self.overrun = True
            self._notify()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.switched:
                self._hold(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Broken):
                self._fail(httpx.RemoteProtocolError(str(cause)))
            elif self.complete:
                self.overrun = True  # bytes past the end: parsing stopped there
            else:
                self._fail(httpx.RemoteProtocolError(f"bad response from the upstream: {exc}"))
        except httptools.HttpParserError as exc:
            if self.complete:
                self.overrun = True
            else:
                self._fail(httpx.RemoteProtocolError(f"bad response from the upstream: {exc}"))
        if not self._head_done and self._error is None:
            # One header arriving in pieces is held by the parser until it ends: the bytes
            # received so far bound it, to within one read.
            self._head_received += len(data)
            if self._head_received > self._limits.max_bytes + _HEAD_SLACK:
                self._fail(httpx.RemoteProtocolError(str(self._too_large())))
        if self._error is not None:
            self._connection.close()
        self._notify()

    def end_of_stream(self) -> None:
        if not self.complete and self._error is None:
            if self._head_done and self._until_close():
                self.complete = True
                self._keep_alive = False
            elif self._head_done:
                self._fail(httpx.RemoteProtocolError("the upstream closed mid-body"))
            elif self._received:
                self._fail(httpx.RemoteProtocolError("the upstream closed mid-head"))
            else:
                self._fail(_NothingReceived("the upstream closed without sending a response"))
        self._notify()

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second message after the response: parsing stops here, so not a byte of it
            # can become part of the one being relayed.
            self.overrun = True
            raise _Overrun

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field: dropped (RFC 9110 §6.5.1), never part of the head
        headers = self.headers
        headers.append((name, value))
        self._head_size += len(name) + len(value)
        limits = self._limits
        if len(headers) > limits.max_headers:
            raise _Broken(f"the upstream's response head has more than {limits.max_headers} fields")
        if self._head_size > limits.max_bytes:
            raise self._too_large()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise _Broken(f"the upstream sent status {status}, outside 100-599")
        if status == 101:
            self._switch()
            return
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            self.headers, self.reason, self._head_size = [], b"", 0
            return
        if not self._head_only:
            self._decoder = _decoder_for(self.headers)  # before the head is done: a 502
        self.status = status
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.overrun = True
            return
        if self._decoder is not None:
            self._decode(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_BUFFER_HIGH and not self._paused:
            self._paused = True
            self._connection.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        if self._decoder is not None and not self._tail:
            self._end_decoding()

    # -- transfer codings other than chunked --------------------------------------------------

    def _decode(self, data: bytes) -> None:
        """Decode ``data`` (after what was left undecoded), at most a read buffer's worth; the
        rest waits, with reading paused, until the body is read (:meth:`next_chunk`)."""
        decoder = self._decoder
        try:
            out = decoder.decompress(self._tail + data if self._tail else data, READ_BUFFER_HIGH)
        except zlib.error as exc:
            self._decoder, self._tail = None, b""
            self._fail(httpx.RemoteProtocolError(f"the upstream's coded body is broken: {exc}"))
            self._connection.close()
            return
        self._tail = decoder.unconsumed_tail
        if out:
            self._chunks.append(out)
            self._buffered += len(out)
        if (self._tail or self._buffered > READ_BUFFER_HIGH) and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        if self.complete and not self._tail:
            self._end_decoding()

    def _end_decoding(self) -> None:
        decoder, self._decoder = self._decoder, None
        out = decoder.flush()
        if out:
            self._chunks.append(out)
            self._buffered += len(out)
        if not decoder.eof:
            self._fail(httpx.RemoteProtocolError("the upstream's coded body ended early"))

    def _switch(self) -> None:
        """A 101: the head of a tunnel when the request was a WebSocket handshake and the
        upstream switches to ``websocket``; else a broken response."""
        if not self._upgrade:
            raise _Broken("the upstream switched protocols unasked (101)")
        offered = b""
        for name, value in self.headers:
            if name.lower() == b"upgrade":
                offered = value.strip().lower()
        if offered != b"websocket":
            raise _Broken(f"the upstream switched to {offered.decode('latin-1')!r}, not websocket")
        self.status = 101
        self._head_done = self.complete = self.switched = True
        self._keep_alive = False  # never pooled: it is the tunnel's now

    def _hold(self, data: bytes) -> None:
        """Bytes of the other protocol before the tunnel takes the connection."""
        self._rest += data
        if len(self._rest) > READ_BUFFER_HIGH and not self._paused:
            self._paused = True
            self._connection.pause_reading()

    def switch(self, tunnel: Tunnel) -> None:
        """Hand the connection, after a 101, to ``tunnel`` as its upstream side. The
        connection is closed by :meth:`close` (the tunnel's end), never pooled."""
        connection = self._connection
        transport = connection.transport
        if not self.switched or transport is None:
            raise RuntimeError("the upstream did not switch protocols")
        rest, self._rest = bytes(self._rest), bytearray()
        tunnel.attach(UPSTREAM, transport, rest, connection.write_paused)

    # -- read by the backend ----------------------------------------------------------------

    async def head(self) -> None:
        """Until the head has arrived (or the response failed: its error is raised)."""
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    def take(self) -> bytes:
        """All the body bytes that have arrived and not been read yet."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._connection.resume_reading()
        return data

    @property
    def body_complete(self) -> bool:
        """Whether every body byte has arrived (and :meth:`take` has them all)."""
        return self.complete and self._error is None and self._decoder is None

    async def hold(self, limit: int) -> bool:
        """Wait, reading nothing, until the whole body has arrived (True) or more than
        ``limit`` bytes of it are waiting (False); the response's error if it broke."""
        while not self.complete or self._tail:
            if self._error is not None:
                raise self._error
            if self._buffered > limit:
                return False
            if self._tail:
                self._decode(b"")
            else:
                await self._wait()
        if self._error is not None:
            raise self._error
        return self._buffered <= limit

    async def next_chunk(self) -> bytes:
        """The next piece of the body, ``b""`` at its end; the response's error if it broke."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= READ_BUFFER_HIGH // 2 and not self._tail:
                    self._paused = False
                    self._connection.resume_reading()
                return chunk
            if self._tail:
                self._decode(b"")
                continue
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()

    async def _wait(self) -> None:
        self._wake = self._connection.loop.create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error

    def _too_large(self) -> _Broken:
        limit = self._limits.max_bytes
        return _Broken(f"the upstream's response head is larger than {limit} bytes")

    def _until_close(self) -> bool:
        """A response framed by the connection's end: no length and not chunked, or with a
        transfer coding whose last is not chunked (RFC 9112 §6.3)."""
        codings: list[bytes] = []
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding":
                codings += _codings(value)
        return not codings or codings[-1] != b"chunked"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._connection.finished(self, self._pool)


class _NothingReceived(httpx.RemoteProtocolError):
    """The connection ended before any byte of a response."""


class _Broken(Exception):
    """Raised from a parser callback: the response cannot be relayed (the reason says why)."""


class _Overrun(Exception):
    """Raised from a parser callback to stop parsing at the end of the response."""


#: zlib's window bits for the transfer codings decoded here (RFC 9110 §8.4.1).
_DECODERS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}


def _codings(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def _decoder_for(headers: RawHeaders) -> Any:
    """A decoder for a response's transfer coding other than chunked, None when it has none;
    a coding that cannot be decoded makes the response broken (the gateway may not pass a
    transfer coding on to a client that did not ask for it, RFC 9110 §10.1.4)."""
    codings: list[bytes] = []
    for name, value in headers:
        if name.lower() == b"transfer-encoding":
            codings += _codings(value)
    if codings and codings[-1] == b"chunked":
        codings.pop()
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _DECODERS:
        named = ", ".join(c.decode("latin-1") for c in codings)
        raise _Broken(f"the upstream's transfer coding {named!r} is not supported")
    return zlib.decompressobj(_DECODERS[codings[0]])


def _has_length(headers: RawHeaders) -> bool:
    return any(name == b"content-length" for name, _ in headers)
