"""The one small interface every backend kind implements: a :class:`ProxyRequest` in, an
:class:`Answer` out.

The gateway knows backends only through :class:`Backend`. A backend returns the answer it got
(status, headers, and a body complete or still arriving); it never sends anything to the client
itself and never decides whether to try elsewhere: the gateway's attempt stage reads the answer
and decides (proxy/attempt.py). Each implementation maps its own failures to
:mod:`proxy.errors` before it has an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.asgi import RawHeaders
from proxy.deadline import Deadline
from proxy.errors import BodyTooLarge, RequestTimeout
from proxy.table import model
from proxy.table.model import Kind
from proxy.tunnel import Tunnel


@dataclass(slots=True)
class ProxyRequest:
    method: str
    #: The normalised path (docs/routing.md): what was matched is what is forwarded.
    path: str
    #: The query string exactly as the client sent it, without '?'.
    query: bytes
    #: The headers the backend sees (docs/forwarding.md).
    headers: RawHeaders
    #: The request body as it arrives, or None when the request has none.
    body: AsyncIterable[bytes] | None
    request_id: str
    route: str
    #: API Gateway's name for the route: ``GET /products/{id}``, or ``ANY /auth``.
    route_key: str
    #: Values captured by ``{param}`` segments of the route's path.
    captures: dict[str, str]
    client_ip: str
    #: The Host header's name in its normal form, without the port.
    host: str | None
    #: As the client spoke it, e.g. ``HTTP/1.1``.
    protocol: str
    #: The task answering it: deadlines cancel it (``Task.get_loop`` gives its loop without
    #: the system call ``asyncio.get_running_loop`` makes).
    task: asyncio.Task[Any]
    #: A WebSocket handshake's Upgrade value (only url backends answer one).
    upgrade: bytes | None = None
    #: The client's target ended in a "?" with no query after it (forwarded as sent).
    empty_query: bool = False
    #: The path url backends get when the route rewrites it (``path`` stays the client's,
    #: which function backends see as ``rawPath``).
    target_path: str | None = None
    #: The route's own ``timeout`` and ``idle_timeout``; None: the backend's.
    timeout: float | None = None
    idle_timeout: float | None = None
    #: What the route's authorizer said of the caller (its context), when it allowed it:
    #: function backends get it as ``requestContext.authorizer.lambda``.
    identity: dict[str, Any] | None = None


def timers(spec: model.Backend, request: ProxyRequest) -> tuple[float, bool, float]:
    """The timers of one exchange with the backend ``spec`` (docs/forwarding.md, "Timers"):
    the deadline's seconds (0: none), whether it runs to the response's last byte (else it
    ends with the head), and how long a streamed body or a tunnel may move no byte (0: no
    limit). The route's values win over the backend's; ``timeout: 0`` leaves no whole-exchange
    deadline, and the idle timeout then bounds the wait for the head."""
    timeout = request.timeout if request.timeout is not None else spec.timeout
    idle = request.idle_timeout if request.idle_timeout is not None else spec.idle_timeout
    if idle is None:
        idle = (
            model.DEFAULT_TUNNEL_IDLE_TIMEOUT
            if request.upgrade is not None
            else model.DEFAULT_STREAM_IDLE_TIMEOUT
        )
    if timeout > 0:
        return timeout, True, idle
    return idle, False, idle


class Stream(Protocol):
    """A response body still arriving (an upstream response)."""

    @property
    def body_complete(self) -> bool:
        """Whether every byte has arrived, so that :meth:`take` returns the rest."""

    def take(self) -> bytes:
        """The bytes that have arrived and not been read yet."""

    async def next_chunk(self) -> bytes:
        """The next piece, ``b""`` at the end; raises when the response broke."""

    async def hold(self, limit: int) -> bool:
        """Wait until the whole body has arrived (True) or more than ``limit`` bytes of it are
        waiting (False), reading nothing."""

    def close(self) -> None:
        """Done with it: the connection goes back to its pool, or is closed."""

    def switch(self, tunnel: Tunnel) -> None:
        """After a 101: the connection becomes ``tunnel``'s upstream side."""


class Answer:
    """A backend's response: status, headers as the backend sent them, and the body, either
    complete (``body``) or arriving (``stream``). :meth:`close` must be called once it has been
    relayed or dropped, saying whether the backend ``failed`` on the way (True), did its part
    (False), or nothing can be said of it (None: the client went away)."""

    __slots__ = ("_on_close", "body", "deadline", "headers", "idle_timeout", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: RawHeaders,
        body: bytes = b"",
        stream: Stream | None = None,
        deadline: Deadline | None = None,
        on_close: Callable[[bool | None], None] | None = None,
        idle_timeout: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        #: The backend's deadline, still running while the body arrives.
        self.deadline = deadline
        #: How long the streamed body (or, after a 101, the tunnel) may move no byte; 0: no
        #: limit.
        self.idle_timeout = idle_timeout
        self._on_close = on_close

    def also_on_close(self, callback: Callable[[bool | None], None]) -> None:
        """Run ``callback(failed)`` when the answer is closed, after what is already there."""
        first = self._on_close
        if first is None:
            self._on_close = callback
            return

        def both(failed: bool | None) -> None:
            first(failed)
            callback(failed)

        self._on_close = both

    def close(self, failed: bool | None = False) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.stream is not None:
            self.stream.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(failed)


class Backend(Protocol):
    name: str
    kind: Kind
    spec: model.Backend

    async def call(self, request: ProxyRequest) -> Answer:
        """Ask the backend; its answer, or a GatewayError before there is one."""

    async def aclose(self) -> None:
        """Release what the backend holds (connections, threads)."""


#: Lambda's limit for a synchronous invocation's payload is 6 MB; a request body above it
#: could never reach a function, so it is refused before it is read.
MAX_FUNCTION_BODY = 6 * 1024 * 1024


async def read_body(
    request: ProxyRequest, deadline: Deadline, within: float, limit: int = MAX_FUNCTION_BODY
) -> bytes:
    """The whole request body, which must arrive before ``deadline`` (``within`` seconds: else
    :class:`~proxy.errors.RequestTimeout`), or :class:`~proxy.errors.BodyTooLarge` past
    ``limit`` bytes (refused from ``Content-Length`` alone when it announces more)."""
    for name, value in request.headers:
        if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise _too_large(limit)
    if request.body is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        deadline.absorb()
        raise RequestTimeout(
            f"the request body did not arrive within {within:g}s", detail="body deadline"
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than {limit} bytes")


class Slots:
    """A count of requests in flight to a backend that refuses, rather than queues, past its
    limit (``max_concurrency``)."""

    __slots__ = ("in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1
