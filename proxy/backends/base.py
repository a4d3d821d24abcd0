"""The one small interface every backend kind implements, and the request it is handed.

The gateway knows backends only through :class:`Backend`; each implementation maps its own
failures to :mod:`proxy.errors` (a :class:`~proxy.errors.GatewayError` before the response has
started, :class:`~proxy.errors.StreamAborted` after).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from proxy.asgi import RawHeaders, Send
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
    body: AsyncIterator[bytes] | None
    request_id: str
    route: str
    #: Values captured by ``{param}`` segments of the route's path.
    captures: dict[str, str]
    client_ip: str


class Backend(Protocol):
    name: str
    kind: Kind
    spec: model.Backend

    async def handle(self, request: ProxyRequest, send: Send) -> None:
        """Answer ``request`` through ``send``, streaming; raise GatewayError or
        StreamAborted on failure."""

    async def aclose(self) -> None:
        """Release what the backend holds (connections, threads)."""
