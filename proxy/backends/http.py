"""The ``url:`` backend: forward a request to an HTTP upstream and stream the answer back.

Bodies move as raw bytes both ways (no decompression, no buffering). Requests go straight to
the process's shared transport (:mod:`proxy.backends.transport`), as httpx requests; the
client around it, built by :func:`new_client` to add no headers and keep no cookies, serves
the ``lambda:`` backends. httpx failures are translated here, and only here, into the gateway's
errors.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import re

import httpx

from proxy.asgi import Send
from proxy.backends.base import ProxyRequest, Slots
from proxy.backends.transport import HeadLimits
from proxy.errors import (
    GatewayError,
    Overloaded,
    StreamAborted,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.headers import client_response_headers
from proxy.table import model

log = logging.getLogger("strangler.backend")

# Bytes a query string may not carry unencoded on the wire to the upstream. Everything else is
# passed exactly as the client sent it.
_QUERY_UNSAFE = re.compile(rb"[\x00-\x20\x7f-\xff#]")


def new_client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    """The process's shared upstream client.

    No default headers (httpx would add User-Agent, Accept and Accept-Encoding), a cookie jar
    that refuses every cookie (a shared jar would carry one user's session into another user's
    requests), no redirects followed, and no proxy settings taken from the environment.
    """
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # The pool itself is unbounded: each backend bounds its own requests in flight
    # (max_concurrency), so one hung upstream cannot take every connection from the others.
    client = httpx.AsyncClient(
        transport=transport,
        cookies=jar,
        follow_redirects=False,
        trust_env=False,
        timeout=None,
    )
    client.headers.clear()
    return client


def head_limits(spec: model.Backend) -> HeadLimits:
    """The transport's bound on the backend's response heads."""
    return HeadLimits(spec.max_response_headers, spec.max_response_header_bytes)


def client_timeouts(spec: model.Backend) -> dict[str, float]:
    """httpx's per-request timeouts for a backend: ``connect_timeout`` for the connect, the
    whole ``timeout`` as a backstop for each read and write (the exchange as a whole is bounded
    separately)."""
    return {
        "connect": spec.connect_timeout,
        "read": spec.timeout,
        "write": spec.timeout,
    }


class HttpBackend:
    """An upstream reached at ``url`` (its path, if any, prefixes every forwarded path)."""

    def __init__(self, spec: model.Backend, transport: httpx.AsyncBaseTransport) -> None:
        assert spec.url is not None
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        # The transport itself, not the client around it: the client's cookie, auth and
        # redirect machinery would only be skipped at a cost on every request.
        self._transport = transport
        self._base = httpx.URL(spec.url)
        self._base_path = self._base.path.rstrip("/")
        self._timeout = spec.timeout
        self._extensions = {"timeout": client_timeouts(spec), "head_limits": head_limits(spec)}
        assert spec.max_concurrency is not None
        self._slots = Slots(spec.max_concurrency)

    def target(self, path: str, query: bytes) -> httpx.URL:
        """The upstream URL for a normalised path and the client's query.

        Built by replacing parts of the parsed base URL rather than parsing a string, so the
        request target can never name another host and the query is not re-encoded.
        """
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = self._base._uri_reference._replace(
            path=self._base_path + path,
            query=_query_text(query) if query else None,
        )
        return url

    async def handle(self, request: ProxyRequest, send: Send) -> None:
        if not self._slots.take():
            raise Overloaded(f"backend {self.name!r} is at its limit of {self._slots.limit}")
        try:
            await self._exchange(request, send)
        finally:
            self._slots.give_back()

    async def _exchange(self, request: ProxyRequest, send: Send) -> None:
        upstream = httpx.Request(
            request.method,
            self.target(request.path, request.query),
            headers=request.headers,
            content=request.body,
            extensions=self._extensions,
        )
        started = False
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._transport.handle_async_request(upstream)
                try:
                    if _ambiguous_framing(response.headers.raw):
                        raise httpx.RemoteProtocolError(
                            "response with both Content-Length and Transfer-Encoding"
                        )
                    status = response.status_code
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": client_response_headers(
                                response.headers.raw, request.request_id, status
                            ),
                        }
                    )
                    started = True
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                finally:
                    await response.aclose()
        except Exception as exc:
            error = self._translate(exc)
            if error is None:
                raise
            if started:
                raise StreamAborted(f"{error.code} mid-response: {error.detail}") from exc
            raise error from exc

    def _translate(self, exc: Exception) -> GatewayError | None:
        """The gateway error for an exception from the exchange; None for foreign ones."""
        if isinstance(exc, TimeoutError):  # the whole-exchange deadline
            return UpstreamTimeout(
                f"backend {self.name!r} did not answer within {self._timeout:g}s"
            )
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            # The request never reached the backend: unavailable, not slow.
            return UpstreamUnavailable(
                f"backend {self.name!r} is unavailable", detail, never_sent=True
            )
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"backend {self.name!r} did not answer in time", detail)
        if isinstance(exc, httpx.TransportError):
            return UpstreamUnavailable(f"backend {self.name!r} is unavailable", detail)
        return None

    async def aclose(self) -> None:
        """The shared transport belongs to the app; nothing of its own to release."""


def _query_text(query: bytes) -> str:
    if _QUERY_UNSAFE.search(query) is None:
        return query.decode("ascii")
    return _QUERY_UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], query).decode("ascii")


def _ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> bool:
    """Both Content-Length and Transfer-Encoding: RFC 9112 §6.3 calls it a possible response
    splitting attempt, to be handled as an error rather than guessed at."""
    length = encoding = False
    for name, _ in headers:
        lowered = name.lower()
        length = length or lowered == b"content-length"
        encoding = encoding or lowered == b"transfer-encoding"
    return length and encoding
