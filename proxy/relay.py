"""The response to the client: a backend's :class:`~proxy.backends.base.Answer`, or the
gateway's own error, sent through the ASGI ``send`` of the request.

:class:`Reply` is the one way anything reaches the client: it adds the gateway's headers
(``X-Request-Id``, a sticky cookie the route set), feeds the shadow's tap, and remembers how
far the response got (the status sent, whether it completed). :func:`relay` sends an answer:
a complete body in one message with its length; a streamed one as it arrives. Once the first
byte is out, a failure can only end the response early (the server then closes the
connection, so the client sees it incomplete); it never sends a second one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.asgi import RawHeaders, Send
from proxy.backends.base import Answer
from proxy.cycle import Cycle
from proxy.deadline import IdleDeadline
from proxy.errors import GatewayError, error_body, error_headers
from proxy.headers import client_response_headers
from proxy.shadow import ResponseTap
from proxy.table.model import HeaderMap

log = logging.getLogger("strangler.gateway")

_BODYLESS = frozenset({204, 304})


class Reply:
    """What goes to the client, and how far it got. Under the gateway's own server the
    response is handed to the connection directly (``cycle``: proxy/cycle.py); under any other
    ASGI server it goes out as ASGI messages."""

    __slots__ = (
        "_cycle",
        "_send",
        "complete",
        "extra_headers",
        "request_id",
        "sent",
        "started",
        "status",
        "tap",
    )

    def __init__(self, send: Send, request_id: str, cycle: Cycle | None = None) -> None:
        self._send = send
        self._cycle = cycle
        self.request_id = request_id
        #: Headers the gateway adds to the backend's (a sticky cookie it set).
        self.extra_headers: RawHeaders | None = None
        #: Copies the response for a shadow comparison, when the request is mirrored.
        self.tap: ResponseTap | None = None
        self.started = False
        self.complete = False
        #: The status sent to the client; 0 until the response starts.
        self.status = 0
        #: Body bytes handed to the connection.
        self.sent = 0

    async def start(self, status: int, headers: RawHeaders, body: bytes, more: bool) -> None:
        """The head (lower-case names, valid values) and the body's first piece."""
        if self.extra_headers:
            headers += self.extra_headers
        tap = self.tap
        if tap is not None:
            tap.start(status, headers)
            tap.body(body, more)
        self.started = True
        self.status = status
        self.sent += len(body)
        cycle = self._cycle
        if cycle is not None:
            cycle.respond(status, headers, body, more)
            if cycle.write_paused:
                await cycle.drain()
        else:
            await self._send({"type": "http.response.start", "status": status, "headers": headers})
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
        self.complete = not more

    async def body(self, chunk: bytes, more: bool) -> None:
        self.sent += len(chunk)
        if self.tap is not None:
            self.tap.body(chunk, more)
        cycle = self._cycle
        if cycle is not None:
            cycle.write(chunk, more)
            if cycle.write_paused:
                await cycle.drain()
        else:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
        self.complete = not more

    async def error(self, error: GatewayError) -> None:
        """The gateway's own JSON error (docs/reference.md, "Errors the gateway answers
        itself")."""
        body = error_body(error, self.request_id)
        await self.start(error.status, error_headers(body, self.request_id), body, False)


async def relay(
    answer: Answer,
    reply: Reply,
    where: tuple[str, str],
    task: asyncio.Task[Any],
    header_map: HeaderMap | None = None,
) -> bool | None:
    """Send ``answer`` to the client and close it; returns how the backend did, as
    :meth:`Answer.close` takes it: False (its part done), True (it broke, overran its deadline
    or stayed idle too long mid-body: the response was cut), None (the client went away
    first). ``where`` is the route and the backend, for the log; ``task`` the request's, which
    a streamed body's idle timer cancels; ``header_map`` the route's ``response_headers``."""
    status = answer.status
    headers = client_response_headers(answer.headers, reply.request_id, status)
    if header_map is not None:
        headers = header_map.apply(headers)
    stream = answer.stream
    failed: bool | None = True
    idle: IdleDeadline | None = None
    try:
        if stream is None or stream.body_complete:
            body = answer.body if stream is None else stream.take()
            if status in _BODYLESS:
                body = b""
            elif stream is None:
                headers.append((b"content-length", b"%d" % len(body)))
            await reply.start(status, headers, body, False)
        else:
            await reply.start(status, headers, stream.take(), True)
            if answer.idle_timeout > 0:
                idle = IdleDeadline(task, answer.idle_timeout)
            while chunk := await stream.next_chunk():
                if idle is not None:
                    idle.touch()
                await reply.body(chunk, True)
            await reply.body(b"", False)
        failed = False
        return False
    except asyncio.CancelledError:
        deadline = answer.deadline
        if deadline is not None and deadline.expired:
            deadline.absorb()
            why = "the backend's timeout ran out"
        elif idle is not None and idle.expired:
            idle.absorb()
            why = f"no byte for the idle timeout ({answer.idle_timeout:g}s)"
        else:
            failed = None
            raise
        log.warning(
            "route=%s backend=%s request_id=%s response aborted: %s", *where, reply.request_id, why
        )
        return True
    except Exception as exc:  # the stream broke: the response ends here, incomplete
        log.warning(
            "route=%s backend=%s request_id=%s response aborted: %s: %s",
            *where,
            reply.request_id,
            type(exc).__name__,
            exc,
        )
        return True
    finally:
        if idle is not None:
            idle.cancel()
        answer.close(failed)
