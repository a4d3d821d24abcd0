"""uvicorn's HTTP protocol (httptools) with a deadline and a size bound for a request's head.

Neither uvicorn nor its parser bounds the time a client may take to send its request line and
headers, so a client trickling a header every few seconds holds a connection open forever
(slowloris). Here each request's head must arrive within ``head_timeout`` seconds of the
connection opening or of its first byte; otherwise the client gets ``408`` and the connection
is closed. Idle keep-alive connections are uvicorn's own ``timeout_keep_alive``.

Nor does either bound the head's size: the parser hands every header to uvicorn, which keeps
them all, so an endless head would grow memory without limit. Here a head longer than
``max_head_bytes`` gets ``431`` and the connection is closed while it is being received. The
exact limits (414, 431 with their JSON errors) are the gateway's; this bound sits above them and
only stops what they would never get to see.
"""

from __future__ import annotations

import asyncio
import uuid
from asyncio import TimerHandle
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import (
    GatewayError,
    HeadersTooLarge,
    RequestTimeout,
    error_body,
    error_headers,
)
from proxy.settings import DEFAULT_HEAD_TIMEOUT, Limits

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


def _error_response(error: GatewayError) -> bytes:
    """The gateway's JSON error (CONTRACT §5), written by hand: no ASGI cycle exists yet."""
    request_id = str(uuid.uuid4())
    body = error_body(error, request_id)
    lines = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}".encode()]
    lines += [name + b": " + value for name, value in error_headers(body, request_id)]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    head_timeout = DEFAULT_HEAD_TIMEOUT
    max_head_bytes = DEFAULT_MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: TimerHandle | None = None
        #: Bytes received since the current head began (None while a body is arriving).
        self._head_bytes: int | None = 0
        #: Whether a request began in the chunk being parsed.
        self._began = False
        #: Set once a refusal has been written: what the client still sends is discarded.
        self._lingering: TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None or self.transport.is_closing():
            return
        in_head = self._head_bytes is not None
        self._began = False
        super().data_received(data)
        if self._head_bytes is None:
            return  # in a body now
        # A chunk counts whole toward the head it continues. When a head began inside it, the
        # share that is head is unknown (bodies and pipelined requests come first), so it is
        # counted from the next chunk: the bound holds to within one read.
        if in_head and not self._began:
            self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._refuse(
                HeadersTooLarge(f"the request head is longer than {self.max_head_bytes} bytes")
            )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        self._began = True
        self._head_bytes = 0
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(RequestTimeout("the request head did not arrive in time"))

    def _refuse(self, error: GatewayError) -> None:
        """Answer and close. Closing a socket with unread input makes the kernel reset the
        connection, and a client still sending would lose the answer; so, as NGINX's
        lingering close, the write side is shut and what arrives is discarded for a while."""
        self._disarm()
        self._head_bytes = None
        transport = self.transport
        if transport.is_closing() or self._lingering is not None:
            return
        transport.write(_error_response(error))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_SECONDS, transport.close)


def guarded_protocol(guard: HeadGuard) -> type[GuardedProtocol]:
    """The protocol class for a listener, with its own head deadline and size bound."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {"head_timeout": guard.timeout, "max_head_bytes": guard.max_bytes},
    )
