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
    MethodNotAllowed,
    NoRoute,
    NotImplementedHere,
    RequestTimeout,
    StreamAborted,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
    UriTooLong,
    send_error,
)
from proxy.headers import only_chunked, read_head, upstream_request_headers
from proxy.hosts import BadHost, Host, parse_host
from proxy.matching import BadPath, match_segments, normalise_path
from proxy.metrics import ABORTED, CLIENT_CLOSED, ERROR_REASONS, NONE, BackendMetrics, Metrics
from proxy.runtime import Runtime
from proxy.settings import Limits
from proxy.shadow import BodyCopy, ResponseTap, Shadower
from proxy.table import model
from proxy.table.compile import CompiledRoute, CompiledTable
from proxy.table.model import IDEMPOTENT_METHODS, WEIGHT_SCALE

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
        shadower: Shadower | None = None,
    ) -> None:
        self._runtime = runtime
        self._shadower = shadower or Shadower()
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
            if method == "TRACE":
                # It would echo the request, credentials included, to whoever asks.
                raise MethodNotAllowed("TRACE is not allowed")
            if head.transfer_encoding is not None and not only_chunked(head.transfer_encoding):
                raise NotImplementedHere(
                    "a transfer coding other than chunked is not supported",
                    detail=f"Transfer-Encoding: {head.transfer_encoding.decode('latin-1')}",
                )
            try:
                path = normalise_path(raw_path)
            except BadPath as exc:
                raise BadRequest(f"bad path: {exc}") from None
            host: Host | None = None
            if head.host is not None:
                try:
                    host = parse_host(head.host)
                except BadHost as exc:
                    raise BadRequest(f"bad Host: {exc}") from None
            found = table.router.match(
                method, match_segments(path), host.name if host else None, headers
            )
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
                host=host.value if host else None,
                forwarding=forwarding,
                scheme=scope.get("scheme", "http"),
                http_version=scope.get("http_version", "1.1"),
                routed=table.routed_headers,
            ),
            body=_Body(receive, watch, self._limits.body_idle_timeout) if head.has_body else None,
            request_id=request_id,
            route=route.name,
            route_key=route.route_key,
            captures=captures,
            client_ip=client_ip,
            host=host.name if host else None,
            protocol="HTTP/" + scope.get("http_version", "1.1"),
        )
        job = None
        shadow = route.shadow
        if (
            shadow is not None
            and method in shadow.spec.methods
            and self._rng.random() * WEIGHT_SCALE < shadow.spec.percent
        ):
            job = self._shadower.begin(route.name, shadow, request, backend)
            if job is not None:
                # Copies of what passes, for the comparison; the request itself is untouched.
                exchange.tap = job.tap
                if isinstance(request.body, _Body):
                    request.body.copy = job.body
        if request.body is None:
            watch.start()
        route_metrics = route.metrics
        answered = [route_metrics.backends[backend.name]]
        route_metrics.in_flight.inc()
        try:
            await _forward(backend, route, request, exchange, watch, answered, self._rng)
        finally:
            route_metrics.in_flight.dec()
            answered[-1].count(
                method, exchange.status or CLIENT_CLOSED, time.perf_counter() - started_at
            )
            if job is not None and not job.primary_done.done():
                job.primary_done.set_result(exchange.complete)

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


#: A response held back while deciding whether to try elsewhere (its status is listed in
#: ``statuses``) must fit in this; a larger one goes to the client as it is.
HELD_RESPONSE_LIMIT = 64 * 1024
#: Retries wait a random time up to this, doubling per retry up to the cap (full jitter, as
#: Envoy's defaults): an immediate retry mostly meets the same failure.
RETRY_BACKOFF = 0.025
RETRY_BACKOFF_MAX = 0.25
_NOTHING: frozenset[int] = frozenset()


async def _forward(
    backend: Backend,
    route: CompiledRoute,
    request: ProxyRequest,
    exchange: _Exchange,
    watch: _DisconnectWatch,
    answered: list[BackendMetrics],
    rng: random.Random,
) -> None:
    """Forward to ``backend`` (with the route's retries and fallback); ``answered`` ends with
    the metrics of the backend that answered."""
    try:
        await _attempts(backend, route, request, exchange, answered, rng)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if watch.fired and task is not None and task.uncancel() == 0:
            where = _where(request, answered)
            log.info("%s client disconnected; upstream request abandoned", where)
            return
        raise
    except ClientDisconnected:
        log.info("%s client disconnected while sending its body", _where(request, answered))
    except StreamAborted as exc:
        # Returning without completing the response makes the server close the connection,
        # so the client sees a truncated response rather than a complete-looking one.
        log.warning("%s response aborted: %s", _where(request, answered), exc)
        answered[-1].error(ABORTED)
    except GatewayError as exc:
        log.warning("%s %s: %s", _where(request, answered), exc.code, exc.detail)
        _count_error(answered[-1], exc)
        if not exchange.started:
            await send_error(exchange.send, exc, request.request_id)
    finally:
        watch.stop()


async def _attempts(
    backend: Backend,
    route: CompiledRoute,
    request: ProxyRequest,
    exchange: _Exchange,
    answered: list[BackendMetrics],
    rng: random.Random,
) -> None:
    """Try ``backend``; after a failure, before anything reached the client, try it again as
    the route's ``retries`` and its budget allow, then the route's ``fallback`` once."""
    retries, budget = route.retries, route.budget
    if budget is not None:
        budget.request()
    retried = 0
    on_fallback = False
    while True:
        held = _held_statuses(route, backend, request, retried, on_fallback)
        try:
            send = _Holding(exchange.send, held).send if held else exchange.send
            await backend.handle(request, send)
            return
        except GatewayError as exc:
            if exchange.started or _body_spent(request):
                raise
            metrics = answered[-1]
            reason = None
            if retries is not None and not on_fallback and retried < retries.attempts:
                reason = _retry_reason(retries, request.method, exc)
            if reason is not None and budget is not None:
                if budget.try_retry():
                    log.info("%s %s: %s; retrying", _where(request, answered), exc.code, exc.detail)
                    _count_error(metrics, exc)
                    metrics.retried(reason)
                    retried += 1
                    cap = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2 ** (retried - 1))
                    await asyncio.sleep(rng.uniform(0, cap))
                    continue
                route.metrics.budget_exhausted()
            fallback = None if on_fallback else _may_fall_back(route, backend, request, exc)
            if fallback is None:
                if isinstance(exc, UpstreamStatus):
                    # Nowhere else to go: the client gets the backend's own answer.
                    await exc.replay(exchange.send)
                    return
                raise
            log.warning(
                "%s %s: %s; the fallback %s answers",
                _where(request, answered),
                exc.code,
                exc.detail,
                fallback.name,
            )
            _count_error(metrics, exc)
            metrics.fell_back(fallback.name)
            answered.append(route.metrics.backends[fallback.name])
            backend, on_fallback = fallback, True


def _held_statuses(
    route: CompiledRoute, backend: Backend, request: ProxyRequest, retried: int, on_fallback: bool
) -> frozenset[int]:
    """The upstream statuses that would send this attempt's request elsewhere, so its response
    is held back: only for an idempotent request without a body (a body is spent once sent),
    and never on the fallback, the last resort."""
    if (
        not route.held_statuses
        or on_fallback
        or request.body is not None
        or request.method not in IDEMPOTENT_METHODS
    ):
        return _NOTHING
    if route.fallback is backend:
        # Chosen by the split and failing: only retries could try again.
        return route.retry_statuses if _may_retry(route, retried) else _NOTHING
    return route.held_statuses if _may_retry(route, retried) else route.fallback_statuses


def _may_retry(route: CompiledRoute, retried: int) -> bool:
    return route.retries is not None and retried < route.retries.attempts


def _retry_reason(retries: model.Retries, method: str, error: GatewayError) -> str | None:
    """The ``retries.retry_on`` condition ``error`` meets, or None when it may not be retried:
    only a connection that was never made is retried for any method; a reset, a timeout or a
    listed status only for idempotent ones (the backend may have acted on the request)."""
    if isinstance(error, UpstreamUnavailable) and error.never_sent:
        return "connect_failure" if "connect_failure" in retries.on else None
    if method not in IDEMPOTENT_METHODS:
        return None
    if isinstance(error, UpstreamStatus):
        return "status" if error.status in retries.statuses else None
    if isinstance(error, UpstreamUnavailable):
        return "reset" if "reset" in retries.on else None
    if isinstance(error, UpstreamTimeout):
        return "timeout" if "timeout" in retries.on else None
    return None


def _may_fall_back(
    route: CompiledRoute, backend: Backend, request: ProxyRequest, error: GatewayError
) -> Backend | None:
    """The route's fallback when it may answer instead: the method is idempotent or the
    request provably never reached the failing backend; a status only when listed."""
    fallback = route.fallback
    if fallback is None or fallback is backend:
        return None
    if isinstance(error, UpstreamStatus):
        return fallback if error.status in route.fallback_statuses else None
    if request.method in IDEMPOTENT_METHODS or error.never_sent:
        return fallback
    return None


def _body_spent(request: ProxyRequest) -> bool:
    """Whether the request body has started to be read (then it cannot be sent again)."""
    return isinstance(request.body, _Body) and request.body.started


def _where(request: ProxyRequest, answered: list[BackendMetrics]) -> str:
    return f"route={request.route} backend={answered[-1].name} request_id={request.request_id}"


def _count_error(metrics: BackendMetrics, error: GatewayError) -> None:
    reason = ERROR_REASONS.get(error.code)
    if reason is not None:
        metrics.error(reason)


class _Exchange:
    """Passes messages to the server, adds the gateway's own response headers, and remembers
    how far the response got."""

    __slots__ = ("_send", "complete", "extra_headers", "started", "status", "tap")

    def __init__(self, send: Send) -> None:
        self._send = send
        #: Copies the response for a shadow comparison, when the request is mirrored.
        self.tap: ResponseTap | None = None
        self.started = False
        self.complete = False
        #: The status sent to the client; 0 until the response starts.
        self.status = 0
        self.extra_headers: RawHeaders = []

    async def send(self, message: Message) -> None:
        if self.tap is not None:
            self.tap.record(message)
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            if self.extra_headers:
                message["headers"] = [*message["headers"], *self.extra_headers]
        elif not message.get("more_body", False):
            self.complete = True
        await self._send(message)


class _Holding:
    """Holds back a response whose status is in ``statuses`` until it is complete, then raises
    :class:`~proxy.errors.UpstreamStatus` with it, so that the gateway may still try elsewhere;
    a response too large to hold is let through after all."""

    __slots__ = ("_messages", "_send", "_size", "_statuses")

    def __init__(self, send: Send, statuses: frozenset[int]) -> None:
        self._send = send
        self._statuses = statuses
        self._messages: list[Message] | None = None
        self._size = 0

    async def send(self, message: Message) -> None:
        messages = self._messages
        if message["type"] == "http.response.start":
            if message["status"] in self._statuses:
                self._messages = [message]
                return
        elif messages is not None:
            messages.append(message)
            if not message.get("more_body", False):
                raise UpstreamStatus(messages[0]["status"], messages)
            self._size += len(message.get("body", b""))
            if self._size > HELD_RESPONSE_LIMIT:
                self._messages = None
                for held in messages:
                    await self._send(held)
            return
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
    """The request body as it arrives, whether anyone has started reading it (then it cannot
    be sent again, to a fallback), and where a shadow's copy of it goes."""

    __slots__ = ("_idle_timeout", "_receive", "_watch", "copy", "started")

    def __init__(self, receive: Receive, watch: _DisconnectWatch, idle_timeout: float) -> None:
        self._receive = receive
        self._watch = watch
        self._idle_timeout = idle_timeout
        self.started = False
        self.copy: BodyCopy | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        return _body(self._receive, self._watch, self._idle_timeout, self.copy)


async def _body(
    receive: Receive, watch: _DisconnectWatch, idle_timeout: float, copy: BodyCopy | None
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
        if copy is not None:
            copy.add(chunk)
        if not message.get("more_body", False):
            watch.start()
            if copy is not None:
                copy.finish()
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
