"""The one translation of HTTP client failures into the gateway's errors, for every backend that
talks HTTP (``url`` through the transport, ``lambda`` through httpx).

As httpx's ``map_httpcore_exceptions``: foreign exceptions are mapped at one boundary, most
specific first, so ``never_sent`` means the same everywhere: the connection was never made, so
even a request that is not idempotent may go to a fallback, and ``retry_on: [connect_failure]``
retries it. Used as ``with backend.errors:`` (one object per backend, no allocation per request).
"""

from __future__ import annotations

from types import TracebackType

import httpx

from proxy.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable


class UpstreamErrors:
    """A context manager raising the gateway error for an httpx failure of ``backend``."""

    __slots__ = ("_name",)

    def __init__(self, backend: str) -> None:
        self._name = backend

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, httpx.TransportError):
            return
        raise self.translate(exc) from exc

    def translate(self, exc: httpx.TransportError) -> GatewayError:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            # The request never reached the backend: unavailable, not slow.
            return UpstreamUnavailable(
                f"backend {self._name!r} is unavailable", detail, never_sent=True
            )
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"backend {self._name!r} did not answer in time", detail)
        return UpstreamUnavailable(f"backend {self._name!r} is unavailable", detail)
