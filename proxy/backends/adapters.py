"""The transport and httpx, each seen as the other: where httpx's API serves (the ``lambda:``
backend's client), it runs on the gateway's transport; where a test brings an httpx transport
(``httpx.MockTransport``), url backends run on it. No other module converts between the two.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import AsyncIterator

import httpx

from proxy.asgi import RawHeaders
from proxy.backends.transport import HeadLimits, Origin, Outgoing, Transport, UpstreamResponse
from proxy.table.model import IDEMPOTENT_METHODS
from proxy.tunnel import Tunnel


class ClientTransport(httpx.AsyncBaseTransport):
    """httpx requests over the gateway's :class:`Transport` (the ``lambda:`` backend's client)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        headers = [(name.lower(), value) for name, value in request.headers.raw]
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)
        outgoing = Outgoing(
            request.method,
            url.raw_path,
            headers,
            request.stream if has_body else None,  # type: ignore[arg-type]
            not has_body and request.method in IDEMPOTENT_METHODS,
        )
        timeouts = request.extensions.get("timeout", {})
        limits = request.extensions.get("head_limits", HeadLimits())
        response = await self._transport.request(
            (url.scheme, url.host, port), outgoing, limits, timeouts.get("connect")
        )
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )

    async def aclose(self) -> None:
        await self._transport.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self._response.next_chunk():
            yield chunk

    async def aclose(self) -> None:
        self._response.close()


def new_client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    """The process's httpx client (for ``lambda:`` backends).

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


class HttpxUpstream:
    """Url backends over an httpx transport (tests pass ``httpx.MockTransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def request(
        self, origin: Origin, outgoing: Outgoing, limits: HeadLimits, connect_timeout: float | None
    ) -> _HttpxResponse:
        scheme, host, port = origin
        target = outgoing.target.decode("ascii")
        path, _, query = target.partition("?")
        url = httpx.URL(scheme=scheme, host=host, port=port, path=path, query=query.encode())
        upstream = httpx.Request(
            outgoing.method,
            url,
            headers=outgoing.headers,
            content=outgoing.body,
        )
        response = await self._transport.handle_async_request(upstream)
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._transport.aclose()


class _HttpxResponse:
    """An httpx response read as the transport's are."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.extensions.get("reason_phrase", b"")
        self.headers: RawHeaders = list(response.headers.raw)
        self._chunks: AsyncIterator[bytes] | None = None
        self._held: list[bytes] = []
        self._done = False

    @property
    def body_complete(self) -> bool:
        return self._done

    def take(self) -> bytes:
        held, self._held = self._held, []
        return b"".join(held)

    async def next_chunk(self) -> bytes:
        if self._held:
            return self.take()
        if self._done:
            return b""
        if self._chunks is None:
            self._chunks = self._response.aiter_raw()
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._done = True
            return b""

    async def hold(self, limit: int) -> bool:
        size = sum(len(chunk) for chunk in self._held)
        while not self._done and size <= limit:
            if self._chunks is None:
                self._chunks = self._response.aiter_raw()
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._done = True
                break
            self._held.append(chunk)
            size += len(chunk)
        return self._done and size <= limit

    def close(self) -> None:
        """httpx.MockTransport's responses hold nothing to release."""

    def switch(self, tunnel: Tunnel) -> None:
        raise RuntimeError("an httpx transport cannot switch protocols")
