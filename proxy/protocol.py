"""uvicorn's HTTP protocol (httptools) with a deadline for receiving a request's head.

Neither uvicorn nor its parser bounds the time a client may take to send its request line and
headers, so a client trickling a header every few seconds holds a connection open forever
(slowloris). Here each request's head must arrive within ``head_timeout`` seconds of the
connection opening or of its first byte; otherwise the client gets ``408`` and the connection
is closed. Idle keep-alive connections are uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.settings import DEFAULT_HEAD_TIMEOUT


def _timeout_response() -> bytes:
    request_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "error": "request_timeout",
            "message": "the request head did not arrive in time",
            "request_id": request_id,
        },
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedProtocol(HttpToolsProtocol):
    head_timeout = DEFAULT_HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_timeout_response())
            self.transport.close()


def guarded_protocol(head_timeout: float) -> type[GuardedProtocol]:
    """The protocol class for a listener, with its own head deadline."""
    return type("GuardedProtocol", (GuardedProtocol,), {"head_timeout": head_timeout})
