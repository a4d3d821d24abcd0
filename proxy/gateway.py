"""The public request path, as a pure ASGI app: one table snapshot, match, pick, forward.

Per request: read the live table once, read the headers once, normalise the path, match a
route, pick a backend, hand it the request, and watch for the client going away. Errors from
backends arrive as :mod:`proxy.errors` types and are rendered here. No framework, no
per-request allocation beyond the request's own data.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator

from proxy.asgi import Message, RawHeaders, Receive, Scope, Send
from proxy.backends.base import Backend, ProxyRequest
from proxy.clientaddr import TrustedProxies
from proxy.errors import (
    BadRequest,
    ClientDisconnected,
    GatewayError,
    HeadersTooLarge,
    NoRoute,
    RequestTimeout,
    StreamAborted,
    UriTooLong,
    send_error,
)
from proxy.headers import read_head, upstream_request_headers
from proxy.matching import BadPath, match_segments, normalise_path, request_host
from proxy.metrics import ABORTED, CLIENT_CLOSED, ERROR_REASONS, NONE, BackendMetrics, Metrics
from proxy.runtime import Runtime
from proxy.settings import Limits
from proxy.table.compile import CompiledRoute, CompiledTable

#: Attributes of the sticky cookie the gateway sets (``sticky: {cookie: NAME, set: true}``):
#: for the whole site, a year, not readable by scripts.
STICKY_COOKIE = b"; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"

log = logging.getLogger("strangler.gateway")


class Gateway:
    """The ASGI app served on the public port."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        rng: random.Random,
        trusted: TrustedProxies | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._runtime = runtime
        self._limits = limits or Limits()
        self._trusted = trusted or TrustedProxies()
        self._unmatched = metrics.unmatched.backends[NONE]
        self._rng = rng

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _not_http(scope, receive, send)
            return
        # The one read of the live table: this request uses this snapshot to its end.
        table = self._runtime.table
        usage = table.usage
        usage.enter()
        try:
            await self._handle(table, scope, receive, send)
        finally:
            usage.exit()

    async def _handle(
        self, table: CompiledTable, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started_at = time.perf_counter()
        headers = scope["headers"]
        head = read_head(headers)
        request_id = head.request_id
        method: str = scope["method"]
        limits = self._limits
        try:
            if head.count > limits.max_headers:
                raise HeadersTooLarge(f"more than {limits.max_headers} header fields")
            if head.size > limits.max_header_bytes:
                raise HeadersTooLarge(f"header fields larger than {limits.max_header_bytes} bytes")
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
            if len(raw_path) + len(scope.get("query_string", b"")) > limits.max_uri_bytes:
                raise UriTooLong(f"the request target is longer than {limits.max_uri_bytes} bytes")
            if head.hosts > 1:
                raise BadRequest("more than one Host header")
            if head.hosts == 0 and scope.get("http_version") == "1.1":
                raise BadRequest("an HTTP/1.1 request must carry a Host header")
            try:
                path = normalise_path(raw_path)
            except BadPath as exc:
                raise BadRequest(f"bad path: {exc}") from None
            host = request_host(head.host) if head.host is not None else None
            found = table.router.match(method, match_segments(path), host, headers)
            if found is None:
                raise NoRoute(f"no route matches {method} {path}")
        except GatewayError as exc:
            await send_error(send, exc, request_id)
            self._unmatched.count(method, exc.status, time.perf_counter() - started_at)
            return
        route, captures = found
        exchange = _Exchange(send)
        backend = self._pick(route, headers, exchange)
        client = scope.get("client")
        forwarding = self._trusted.resolve(client[0] if client else "0.0.0.0", headers)
        client_ip = forwarding.client_ip
        watch = _DisconnectWatch(receive, exchange)
        request = ProxyRequest(
            method=method,
            path=path,
            query=scope.get("query_string", b""),
            headers=upstream_request_headers(
                headers,
                head,
                forwarding=forwarding,
                scheme=scope.get("scheme", "http"),
                http_version=scope.get("http_version", "1.1"),
            ),
            body=_Body(receive, watch, self._limits.body_idle_timeout) if head.has_body else None,
            request_id=request_id,
            route=route.name,
            route_key=route.route_key,
            captures=captures,
            client_ip=client_ip,
            host=host,
            protocol="HTTP/" + scope.get("http_version", "1.1"),
        )
        if request.body is None:
            watch.start()
        route_metrics = route.metrics
        answered = [route_metrics.backends[backend.name]]
        route_metrics.in_flight.inc()
        try:
            await _forward(backend, route, request, exchange, watch, answered)
        finally:
            route_metrics.in_flight.dec()
            answered[-1].count(
                method, exchange.status or CLIENT_CLOSED, time.perf_counter() - started_at
            )

    def _pick(self, route: CompiledRoute, headers: RawHeaders, exchange: _Exchange) -> Backend:
        """The route's backend for this request: by its sticky key when it has one."""
        sticky = route.sticky
        if sticky is None:
            return route.split.pick(self._rng)
        key = sticky.key(headers)
        if key is None and sticky.set_cookie and sticky.cookie is not None:
            key = uuid.uuid4().hex
            exchange.extra_headers.append(
                (b"set-cookie", sticky.cookie + b"=" + key.encode() + STICKY_COOKIE)
            )
        if key is None:
            return route.split.pick(self._rng)
        return route.split.pick_for_key(key)


#: Methods a fallback may repeat whatever happened to the first attempt (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _may_fall_back(
    route: CompiledRoute,
    backend: Backend,
    request: ProxyRequest,
    exchange: _Exchange,
    error: GatewayError,
) -> Backend | None:
    """The route's fallback when it may answer instead: nothing has reached the client, the
    request body (if any) was not consumed, and the method is idempotent or the request
    provably never reached the failing backend."""
    fallback = route.fallback
    if fallback is None or fallback is backend or exchange.started:
        return None
    if isinstance(request.body, _Body) and request.body.started:
        return None
    if request.method in IDEMPOTENT or error.never_sent:
        return fallback
    return None


async def _forward(
    backend: Backend,
    route: CompiledRoute,
    request: ProxyRequest,
    exchange: _Exchange,
    watch: _DisconnectWatch,
    answered: list[BackendMetrics],
) -> None:
    """Forward to ``backend`` (or its route's fallback); ``answered`` ends with the metrics of
    the backend that answered."""
    metrics = answered[-1]
    where = f"route={request.route} backend={backend.name} request_id={request.request_id}"
    try:
        try:
            await backend.handle(request, exchange.send)
        except GatewayError as exc:
            fallback = _may_fall_back(route, backend, request, exchange, exc)
            if fallback is None:
                raise
            log.warning(
                "%s %s: %s; the fallback %s answers", where, exc.code, exc.detail, fallback.name
            )
            _count_error(metrics, exc)
            metrics.fell_back(fallback.name)
            metrics = route.metrics.backends[fallback.name]
            answered.append(metrics)
            where = f"route={request.route} backend={fallback.name} request_id={request.request_id}"
            await fallback.handle(request, exchange.send)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if watch.fired and task is not None and task.uncancel() == 0:
            log.info("%s client disconnected; upstream request abandoned", where)
            return
        raise
    except ClientDisconnected:
        log.info("%s client disconnected while sending its body", where)
    except StreamAborted as exc:
        # Returning without completing the response makes the server close the connection,
        # so the client sees a truncated response rather than a complete-looking one.
        log.warning("%s response aborted: %s", where, exc)
        metrics.error(ABORTED)
    except GatewayError as exc:
        log.warning("%s %s: %s", where, exc.code, exc.detail)
        _count_error(metrics, exc)
        if not exchange.started:
            await send_error(exchange.send, exc, request.request_id)
    finally:
        watch.stop()


def _count_error(metrics: BackendMetrics, error: GatewayError) -> None:
    reason = ERROR_REASONS.get(error.code)
    if reason is not None:
        metrics.error(reason)


class _Exchange:
    """Passes messages to the server, adds the gateway's own response headers, and remembers
    how far the response got."""

    __slots__ = ("_send", "complete", "extra_headers", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.complete = False
        #: The status sent to the client; 0 until the response starts.
        self.status = 0
        self.extra_headers: RawHeaders = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            if self.extra_headers:
                message["headers"] = [*message["headers"], *self.extra_headers]
        elif not message.get("more_body", False):
            self.complete = True
        await self._send(message)


class _DisconnectWatch:
    """Once the request body has been read, waits for the client to disconnect and cancels the
    request's task if that happens before the response is complete, so that the upstream
    request is abandoned instead of running on for nobody."""

    __slots__ = ("_exchange", "_receive", "_target", "_watcher", "fired")

    def __init__(self, receive: Receive, exchange: _Exchange) -> None:
        self._receive = receive
        self._exchange = exchange
        self._target: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False

    def start(self) -> None:
        self._target = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self._exchange.complete and self._target is not None:
            self.fired = True
            self._target.cancel()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


class _Body:
    """The request body as it arrives, and whether anyone has started reading it (then it
    cannot be sent again, to a fallback)."""

    __slots__ = ("_idle_timeout", "_receive", "_watch", "started")

    def __init__(self, receive: Receive, watch: _DisconnectWatch, idle_timeout: float) -> None:
        self._receive = receive
        self._watch = watch
        self._idle_timeout = idle_timeout
        self.started = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        return _body(self._receive, self._watch, self._idle_timeout)


async def _body(
    receive: Receive, watch: _DisconnectWatch, idle_timeout: float
) -> AsyncIterator[bytes]:
    """The request body as it arrives; the disconnect watch starts once it is complete. A
    client that sends nothing for ``idle_timeout`` seconds mid-body gets 408."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body stalled for {idle_timeout:g}s", detail="body idle timeout"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            watch.start()
            if chunk:
                yield chunk
            return
        if chunk:
            yield chunk


async def _not_http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
