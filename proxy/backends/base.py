"""The one small interface every backend kind implements, and the request it is handed.

The gateway knows backends only through :class:`Backend`; each implementation maps its own
failures to :mod:`proxy.errors` (a :class:`~proxy.errors.GatewayError` before the response has
started, :class:`~proxy.errors.StreamAborted` after).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Protocol

from proxy.asgi import RawHeaders, Send
from proxy.errors import BodyTooLarge, RequestTimeout
from proxy.table import model
from proxy.table.model import Kind


@dataclass(slots=True)
class ProxyRequest:
    method: str
    #: The normalised path (CONTRACT §2.2): what was matched is what is forwarded.
    path: str
    #: The query string exactly as the client sent it, without '?'.
    query: bytes
    #: The headers the backend sees (CONTRACT §2.7).
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
    #: The Host header's name, lower-case, without the port.
    host: str | None
    #: As the client spoke it, e.g. ``HTTP/1.1``.
    protocol: str


class Backend(Protocol):
    name: str
    kind: Kind
    spec: model.Backend

    async def handle(self, request: ProxyRequest, send: Send) -> None:
        """Answer ``request`` through ``send``, streaming; raise GatewayError or
        StreamAborted on failure."""

    async def aclose(self) -> None:
        """Release what the backend holds (connections, threads)."""


#: Lambda's limit for a synchronous invocation's payload is 6 MB; a request body above it
#: could never reach a function, so it is refused before it is read.
MAX_FUNCTION_BODY = 6 * 1024 * 1024


async def read_body(request: ProxyRequest, within: float, limit: int = MAX_FUNCTION_BODY) -> bytes:
    """The whole request body, which must arrive within ``within`` seconds (else
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
        async with asyncio.timeout(within):
            async for chunk in request.body:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
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
