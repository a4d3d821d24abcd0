"""The ``url:`` backend: forward a request to an HTTP upstream and return its response as it
arrives.

Bodies move as raw bytes both ways (no decompression, no buffering). Requests go straight to the
process's shared :class:`~proxy.backends.transport.Transport` as :class:`Outgoing` requests;
its failures become the gateway's errors at :class:`~proxy.backends.errors.UpstreamErrors`.
The backend's ``timeout`` (or the route's) bounds the whole exchange: its deadline starts here
and goes on running, with the answer, while the body is relayed; with ``timeout: 0`` it bounds
only the wait for the head, and the idle timeout the body (docs/forwarding.md, "Timers").
``max_concurrency`` counts the request until its answer is closed, a tunnel until it closes.
"""

from __future__ import annotations

import asyncio
import re
from typing import Protocol

from proxy.asgi import RawHeaders
from proxy.backends.base import Answer, ProxyRequest, Slots, Stream, timers
from proxy.backends.errors import UpstreamErrors
from proxy.backends.transport import HeadLimits, Origin, Outgoing
from proxy.deadline import Deadline
from proxy.errors import Overloaded, UpstreamTimeout, UpstreamUnavailable
from proxy.table import model
from proxy.table.model import IDEMPOTENT_METHODS

# Bytes a query string may not carry unencoded on the wire to the upstream. Everything else is
# passed exactly as the client sent it.
_QUERY_UNSAFE = re.compile(rb"[\x00-\x20\x7f-\xff#]")
_URL = re.compile(r"(https?)://(\[[^\]]+\]|[^:/]+)(?::(\d+))?(/[^?#]*)?\Z")


class Upstream(Protocol):
    """What a url backend sends its requests through (the transport, or in tests an adapter
    around any httpx transport: proxy/backends/adapters.py)."""

    async def request(
        self,
        origin: Origin,
        outgoing: Outgoing,
        limits: HeadLimits,
        connect_timeout: float | None,
    ) -> Stream: ...


def head_limits(spec: model.Backend) -> HeadLimits:
    """The transport's bound on the backend's response heads."""
    return HeadLimits(spec.max_response_headers, spec.max_response_header_bytes)


def origin_of(url: str) -> tuple[Origin, str]:
    """A backend URL's (scheme, host, port) and base path (without a trailing ``/``)."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    scheme, host, port, path = match.groups()
    default = 443 if scheme == "https" else 80
    return (scheme, host.strip("[]"), int(port) if port else default), (path or "").rstrip("/")


class HttpBackend:
    """An upstream reached at ``url`` (its path, if any, prefixes every forwarded path)."""

    def __init__(self, spec: model.Backend, upstream: Upstream) -> None:
        assert spec.url is not None
        assert spec.max_concurrency is not None
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._upstream = upstream
        self._origin, base_path = origin_of(spec.url)
        self._base_path = base_path.encode("ascii")
        scheme, host, port = self._origin
        bracketed = f"[{host}]" if ":" in host else host
        #: For a request that carries no Host (HTTP/1.0): the upstream's own name.
        self._default_host = (
            bracketed if port == (443 if scheme == "https" else 80) else f"{bracketed}:{port}"
        ).encode("ascii")
        self._connect_timeout = spec.connect_timeout
        self._limits = head_limits(spec)
        self._slots = Slots(spec.max_concurrency)
        self.errors = UpstreamErrors(spec.name)

    def target(self, path: str, query: bytes, empty_query: bool = False) -> bytes:
        """The request target for a normalised path and the client's query: the base path,
        the path, the query byte for byte (only bytes that may not stand in a URI encoded),
        and a "?" alone when the client sent one."""
        target = self._base_path + path.encode("ascii")
        if query:
            if _QUERY_UNSAFE.search(query) is not None:
                query = _QUERY_UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], query)
            target += b"?" + query
        elif empty_query:
            target += b"?"
        return target

    async def call(self, request: ProxyRequest) -> Answer:
        slots = self._slots
        if not slots.take():
            raise Overloaded(f"backend {self.name!r} is at its limit of {slots.limit}")
        limit, whole, idle = timers(self.spec, request)
        deadline = Deadline(request.task, limit)
        headers = request.headers
        if request.host is None:
            headers = [(b"host", self._default_host), *headers]
        outgoing = Outgoing(
            request.method,
            self.target(request.target_path or request.path, request.query, request.empty_query),
            headers,
            request.body,
            request.body is None and request.method in IDEMPOTENT_METHODS,
            request.upgrade is not None,
        )
        try:
            with self.errors:
                response = await self._upstream.request(
                    self._origin, outgoing, self._limits, self._connect_timeout
                )
        except asyncio.CancelledError:
            slots.give_back()
            if not deadline.expired:
                deadline.cancel()
                raise
            deadline.absorb()
            raise self.timed_out(limit) from None
        except BaseException:
            deadline.cancel()
            slots.give_back()
            raise
        status: int = response.status  # type: ignore[attr-defined]
        if not whole or status == 101:
            # The deadline bounded the wait for the head; a stream's idle timer, or a tunnel's,
            # takes over (a tunnel keeps its slot until it closes).
            deadline.cancel()
        answer = Answer(
            status,
            response.headers,  # type: ignore[attr-defined]
            stream=response,
            deadline=deadline if whole and status != 101 else None,
            on_close=lambda failed: slots.give_back(),
            idle_timeout=idle,
        )
        if _ambiguous_framing(answer.headers):
            answer.close(failed=True)
            raise UpstreamUnavailable(
                f"backend {self.name!r} is unavailable",
                "response with both Content-Length and Transfer-Encoding",
            )
        return answer

    def timed_out(self, limit: float) -> UpstreamTimeout:
        return UpstreamTimeout(f"backend {self.name!r} did not answer within {limit:g}s")

    async def aclose(self) -> None:
        """The shared transport belongs to the app; nothing of its own to release."""


def _ambiguous_framing(headers: RawHeaders) -> bool:
    """Both Content-Length and Transfer-Encoding: RFC 9112 §6.3 calls it a possible response
    splitting attempt, to be handled as an error rather than guessed at."""
    length = encoding = False
    for name, _ in headers:
        lowered = name.lower()
        length = length or lowered == b"content-length"
        encoding = encoding or lowered == b"transfer-encoding"
    return length and encoding
