"""The HTTP/1.1 transport under the shared httpx client: asyncio protocols, llhttp parsing, and
a connection pool whose cost per request does not grow with its size.

httpx's default transport (httpcore) checks every pooled connection for readability with a
system call on every request, through anyio's attribute lookups: with a few dozen pooled
connections that was most of the gateway's CPU, and throughput fell as concurrency rose
(bench/README.md). Here a pooled connection learns that it went bad when it happens, from its
protocol's callbacks (bytes or EOF arriving while idle), so taking one from the pool is a list
pop. Parsing is llhttp through httptools, the parser uvicorn already uses on the public side.

What it keeps from httpcore, and the gateway relies on: the request goes out framed exactly as
its headers say (Content-Length or chunked), the response body is passed on transfer-decoded
but not content-decoded, a response that runs past its end or breaks its framing is never
reused, and failures are httpx's exceptions (ConnectError, ConnectTimeout, ReadTimeout,
WriteTimeout, RemoteProtocolError, ReadError).

What a response is made of is decided here and nowhere else: parsing stops at the end of the
response, so bytes an upstream sends after it (a second response in the same write) can never
add fields to it; trailer fields are dropped, never merged into the head (RFC 9110 §6.5.2); a
head is bounded in fields and bytes (:class:`HeadLimits`, per backend); a status outside
100-599, or a 101 nobody asked for, is a broken response.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import certifi
import httptools
import httpx

from proxy.table.model import (
    DEFAULT_MAX_RESPONSE_HEADER_BYTES,
    DEFAULT_MAX_RESPONSE_HEADERS,
    IDEMPOTENT_METHODS,
)

#: Idle connections kept per upstream (host, port); more are closed when returned.
MAX_IDLE_PER_ORIGIN = 256
#: An idle connection older than this is closed rather than reused: the upstream may be
#: closing it at that very moment (httpx's default).
KEEPALIVE_EXPIRY = 5.0
#: Response bytes buffered before reading from the upstream pauses (the client is slower).
READ_BUFFER_HIGH = 256 * 1024


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """How large a response head an upstream may send: header fields, and the bytes of their
    names and values (a backend's ``max_response_headers`` and ``max_response_header_bytes``).
    Passed per request as the ``head_limits`` extension."""

    max_headers: int = DEFAULT_MAX_RESPONSE_HEADERS
    max_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES


_DEFAULT_LIMITS = HeadLimits()

_Origin = tuple[str, str, int]


class PooledTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, url.host, port)
        connection = self._take(origin)
        if connection is not None:
            try:
                return await connection.exchange(request, timeouts, self)
            except _NothingReceived:
                # The upstream closed this idle connection just as it was reused, before any
                # byte of an answer: a request that may be sent twice is sent again, once, on a
                # new connection (as Go's client and nginx's proxy_next_upstream do).
                connection.close()
                if not _replayable(request):
                    raise
            except BaseException:
                connection.close()
                raise
        connection = await self._connect(origin, timeouts.get("connect"))
        try:
            return await connection.exchange(request, timeouts, self)
        except BaseException:
            connection.close()
            raise

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_EXPIRY:
                return connection
            connection.close()
        return None

    def give_back(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: _Origin, limit: float | None) -> _Connection:
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
                    lambda: _Connection(origin),
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
    """One upstream connection: sends a request, parses its response, and tells the pool
    whether it can carry another."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.closed = False
        #: The response being read; None while idle (then any byte received spoils it).
        self._response: _Response | None = None
        self._spoiled = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    @property
    def reusable(self) -> bool:
        return not (self.closed or self._spoiled)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            # Bytes nobody asked for: a late body, or a broken upstream. Never reuse this.
            self._spoiled = True
            self.close()
            return
        self._response.feed(data)

    def eof_received(self) -> bool | None:
        if self._response is not None:
            self._response.end_of_stream()
        self._spoiled = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()
        if self._response is not None:
            self._response.end_of_stream()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- one exchange -----------------------------------------------------------------------

    async def exchange(
        self, request: httpx.Request, timeouts: dict[str, float | None], pool: PooledTransport
    ) -> httpx.Response:
        assert self.transport is not None
        head_only = request.method == "HEAD"
        limits = request.extensions.get("head_limits", _DEFAULT_LIMITS)
        response = self._response = _Response(self, head_only, timeouts.get("read"), limits)
        chunked = False
        lines = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                raise httpx.LocalProtocolError("a header contains CR or LF")
            lines += [name, b": ", value, b"\r\n"]
            if name.lower() == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
        lines.append(b"\r\n")
        self._write(b"".join(lines))
        try:
            await self._send_body(request, chunked, timeouts.get("write"))
        except httpx.WriteError as exc:
            # The upstream stopped reading the body. It may have answered first (a 413 before
            # the end of an upload, then a close): that answer is the one to pass on. The
            # connection is not reused either way.
            self._spoiled = True
            try:
                status, headers, reason = await response.head()
            except httpx.HTTPError:
                raise exc from None
        else:
            status, headers, reason = await response.head()
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(response, pool),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def _send_body(self, request: httpx.Request, chunked: bool, limit: float | None) -> None:
        async for chunk in request.stream:  # type: ignore[union-attr]
            if not chunk:
                continue
            self._write(b"%X\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await self._drain(limit)
        if chunked:
            self._write(b"0\r\n\r\n")
        await self._drain(limit)

    def _write(self, data: bytes) -> None:
        # uvloop raises on a write to a transport the peer has closed (asyncio would drop it).
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise httpx.WriteError("the upstream closed the connection")
        try:
            self.transport.write(data)
        except RuntimeError as exc:
            raise httpx.WriteError(f"the upstream closed the connection: {exc}") from None

    async def _drain(self, limit: float | None) -> None:
        if self.closed:
            raise httpx.WriteError("the upstream closed the connection")
        if self._can_write.is_set():
            return
        try:
            async with asyncio.timeout(limit):
                await self._can_write.wait()
        except TimeoutError:
            raise httpx.WriteTimeout("writing the request timed out") from None

    def finished(self, response: _Response, pool: PooledTransport) -> None:
        """The response was read to its end or abandoned: pool or close the connection."""
        self._response = None
        if response.clean and self.reusable:
            pool.give_back(self.origin, self)
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


class _Response:
    """A response as llhttp parses it: the head once complete, then body chunks."""

    def __init__(
        self,
        connection: _Connection,
        head_only: bool,
        read_timeout: float | None,
        limits: HeadLimits,
    ):
        self._connection = connection
        self._head_only = head_only
        self._read_timeout = read_timeout
        self._limits = limits
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        #: Bytes of header names and values so far, and bytes received while in the head.
        self._head_size = 0
        self._head_received = 0
        self._reason = b""
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

    @property
    def clean(self) -> bool:
        return self.complete and not self.overrun and self._error is None and self._keep_alive

    # -- fed by the protocol ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._received = True
        if self.complete:
            self.overrun = True
            self._notify()
            return
        try:
            self._parser.feed_data(data)
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
                self._fail(self._too_large())
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
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field: dropped (RFC 9110 §6.5.1), never part of the head
        self._headers.append((name, value))
        self._head_size += len(name) + len(value)
        limits = self._limits
        if len(self._headers) > limits.max_headers:
            raise _Broken(f"the upstream's response head has more than {limits.max_headers} fields")
        if self._head_size > limits.max_bytes:
            raise self._too_large()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise _Broken(f"the upstream sent status {status}, outside 100-599")
        if status == 101:
            raise _Broken("the upstream switched protocols unasked (101)")
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            self._headers, self._reason, self._head_size = [], b"", 0
            return
        self.status = status
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.overrun = True
            return
        self._chunks.append(bytes(body))
        self._buffered += len(body)
        if self._buffered > READ_BUFFER_HIGH and not self._paused:
            self._paused = True
            self._connection.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self.complete = True

    # -- read by the stream -----------------------------------------------------------------

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self.status, self._headers, self._reason

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= READ_BUFFER_HIGH // 2:
                    self._paused = False
                    self._connection.resume_reading()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self.complete:
                return
            else:
                await self._wait()

    async def _wait(self) -> None:
        self._wake = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._read_timeout):
                await self._wake
        except TimeoutError:
            raise httpx.ReadTimeout("the upstream did not send data in time") from None
        finally:
            self._wake = None

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error

    def _too_large(self) -> _Broken:
        limit = self._limits.max_bytes
        return _Broken(f"the upstream's response head is larger than {limit} bytes")

    def _until_close(self) -> bool:
        """A response framed by the connection's end: no length and not chunked."""
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names


class _NothingReceived(httpx.RemoteProtocolError):
    """The connection ended before any byte of a response."""


class _Broken(Exception):
    """Raised from a parser callback: the response cannot be relayed (the reason says why)."""


class _Overrun(Exception):
    """Raised from a parser callback to stop parsing at the end of the response."""


#: Bytes beyond a head's limit received before it is judged too large, for the status line
#: and line ends that the limit (names and values) does not count.
_HEAD_SLACK = 16 * 1024


def _replayable(request: httpx.Request) -> bool:
    """Whether a request may be sent twice: idempotent, and without a body (one streamed from
    the client cannot be sent again)."""
    if request.method not in IDEMPOTENT_METHODS:
        return False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value != b"0"):
            return False
    return True


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: _Response, pool: PooledTransport) -> None:
        self._response = response
        self._pool = pool
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.chunks():
            yield chunk

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._response._connection.finished(self._response, self._pool)
