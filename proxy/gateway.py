"""The public request path, as a pure ASGI app, read top to bottom in :meth:`Gateway.serve`:

1. **resolve**: one snapshot of the live table, the request's checks (limits, Host, method,
   transfer coding), its normalised path and route (proxy/routes.py), and its backend by the
   sticky key;
2. **attempt**: ask the backend, with the route's retries and fallback (proxy/attempt.py);
3. **relay**: the answer, or the gateway's error, to the client, the shadow's taps fed on the
   way (proxy/relay.py);
4. **record**: the request's metrics, once, against the backend that answered.

The gateway knows nothing of how a backend works; it never waits for anything but the request
itself. A client that goes away is learnt from the connection (proxy/connection.py calls back)
and cancels the request's task, which abandons the upstream exchange; under another ASGI
server a watching task does the same.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from proxy.accesslog import AccessLog, Finished
from proxy.asgi import RawHeaders, Receive, Scope, Send
from proxy.attempt import Failed, attempt
from proxy.authorizer import Allow, Authorizer, Deny, Outcome
from proxy.backends.base import Answer, ProxyRequest
from proxy.clientaddr import TrustedProxies
from proxy.cycle import Cycle
from proxy.errors import (
    AuthorizerUnavailable,
    BadRequest,
    ClientDisconnected,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    NotImplementedHere,
    RequestTimeout,
    Unauthorized,
    UpgradeNotSupported,
    UriTooLong,
)
from proxy.headers import (
    RequestHead,
    client_response_headers,
    only_chunked,
    read_head,
    upstream_request_headers,
)
from proxy.inventory import MAX_SAMPLE_BODY, Inventory
from proxy.live import Live
from proxy.metrics import ABORTED, CLIENT_CLOSED, ERROR_REASONS, NONE, BackendMetrics, Metrics
from proxy.relay import Reply, relay
from proxy.requestid import RequestIds
from proxy.runtime import Runtime
from proxy.settings import Limits
from proxy.shadow import BodyCopy, ResponseTap, Shadower
from proxy.table.model import WEIGHT_SCALE, Kind
from proxy.tracecontext import TraceContext, trace_of
from proxy.tunnel import Tunnel

#: Attributes of the sticky cookie the gateway sets (``sticky: {cookie: NAME, set: true}``):
#: for the whole site, a year, not readable by scripts.
STICKY_COOKIE = b"; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"

log = logging.getLogger("strangler.gateway")


class SpanSink(Protocol):
    """Where a finished request's span goes (proxy/spans.py)."""

    def export(self, record: Finished) -> None: ...


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
        access_log: AccessLog | None = None,
        spans: SpanSink | None = None,
        inventory: Inventory | None = None,
    ) -> None:
        self._runtime = runtime
        self._inventory = inventory
        self._access_log = access_log
        self._spans = spans
        self._shadower = shadower or Shadower()
        self._limits = limits or Limits()
        self._trusted = trusted or TrustedProxies()
        self._rng = rng
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _not_http(scope, receive, send)
            return
        # The one read of the live table: this request uses this snapshot to its end.
        live = self._runtime.live
        usage = live.usage
        usage.enter()
        try:
            await self.serve(live, scope, receive, send)
        finally:
            usage.exit()

    async def serve(self, live: Live, scope: Scope, receive: Receive, send: Send) -> None:
        started_at = time.perf_counter()
        headers = scope["headers"]
        head = read_head(headers)
        request_id = head.request_id or self._ids.next()
        extensions = scope.get("extensions")
        cycle = extensions.get("strangler.cycle") if extensions else None
        reply = Reply(send, request_id, cycle)
        method: str = scope["method"]
        trace, tracestate = trace_of(head.traceparent, self._rng, self._spans is not None)
        logged = self._access_log is not None or self._spans is not None
        record = self._record(scope, head, request_id, trace, method) if logged else None

        # -- resolve --------------------------------------------------------------------------
        table = live.table
        try:
            raw_path = self._check(scope, head, method)
            resolved = table.resolve(method, raw_path, head.host, headers)
        except GatewayError as exc:
            await reply.error(exc)
            elapsed = time.perf_counter() - started_at
            live.unmatched.count(method, exc.status, elapsed)
            if record is not None:
                record.error, record.status, record.duration = exc.code, exc.status, elapsed
                record.bytes_out = reply.sent
                self._finish(record)
            return
        route = resolved.route
        if record is not None:
            record.path, record.route = resolved.path, route.name
        state = live.state(route)
        client = scope.get("client")
        forwarding = self._trusted.resolve(client[0] if client else "0.0.0.0", headers)
        if record is not None:
            record.client_ip = forwarding.client_ip
        version = scope.get("http_version", "1.1")
        host = resolved.host
        if host is not None:
            host_value: bytes | None = host.value
            host_name: str | None = host.name
        else:
            # HTTP/1.0 without Host: the address the client reached, as NGINX's $host is the
            # server's name, so that the backend's absolute URLs point at the gateway.
            host_value, host_name = _listener_host(scope)
        body = _Body(receive, self._limits.body_idle_timeout) if head.has_body else None
        task = cycle.task if cycle is not None else asyncio.current_task()
        assert task is not None
        authorizer = route.authorizer
        upstream_headers = upstream_request_headers(
            headers,
            head,
            host=host_value,
            request_id=request_id,
            forwarding=forwarding,
            scheme=scope.get("scheme", "http"),
            http_version=version,
            routed=table.routed_headers,
            traceparent=trace.header,
            tracestate=tracestate,
            # Whatever the authorizer answers, a client never sets its own identity headers
            # (docs/authorizers.md, "Anti-spoofing").
            remove=authorizer.identity_headers if authorizer is not None else frozenset(),
        )
        target_path = None
        if route.rewrite is not None:
            target_path, replaced = route.rewrite.apply(resolved.path, resolved.captures)
            if replaced is not None:
                # What was replaced, so that the backend can build links to itself.
                upstream_headers.append((b"x-forwarded-prefix", replaced.encode("ascii")))
        spec = route.spec
        upgrade = cycle.upgrade if cycle is not None else None
        request = ProxyRequest(
            method=method,
            path=resolved.path,
            query=scope.get("query_string", b""),
            headers=upstream_headers,
            body=body,
            request_id=request_id,
            route=route.name,
            route_key=route.route_key,
            captures=resolved.captures,
            client_ip=forwarding.client_ip,
            host=host_name,
            protocol="HTTP/" + version,
            task=task,
            upgrade=upgrade,
            empty_query=cycle is not None and cycle.empty_query,
            target_path=target_path,
            timeout=spec.timeout,
            idle_timeout=spec.idle_timeout,
        )
        if authorizer is not None and not await self._authorize(
            authorizer, route.optional, request, headers, reply, record, started_at
        ):
            return
        if spec.request_headers is not None:
            request.headers = spec.request_headers.apply(request.headers)
        if upgrade is not None:
            # The two hop-by-hop fields that pass, and only for a WebSocket handshake.
            request.headers += ((b"connection", b"upgrade"), (b"upgrade", upgrade))
        backend, minted = route.choose(headers, self._rng)
        if minted is not None:
            sticky = route.sticky
            assert sticky is not None
            assert sticky.cookie is not None
            cookie = sticky.cookie + b"=" + minted.encode() + STICKY_COOKIE
            reply.extra_headers = [(b"set-cookie", cookie)]
        job = None
        shadow = route.shadow
        if (
            shadow is not None
            and upgrade is None
            and method in shadow.spec.methods
            and self._rng.random() * WEIGHT_SCALE < shadow.spec.percent
        ):
            job = self._shadower.mirror(route.name, shadow, state.shadow_counters, request, backend)
            if job is not None:
                # Copies of what passes, for the comparison; the request itself is untouched.
                reply.tap = job.tap
                if body is not None:
                    body.copy = job.body

        inventory, template, sampled = self._inventory, None, None
        if inventory is not None and backend.kind is Kind.LEGACY:
            template = inventory.template(resolved.path)
            if upgrade is None and inventory.wants_sample(backend.name, method, template):
                # The monolith's answer, recorded (docs/inventory.md, "Samples"): the shadow's
                # copies when it has them, else copies of its own.
                if reply.tap is None:
                    reply.tap = ResponseTap(MAX_SAMPLE_BODY)
                if body is not None and body.copy is None:
                    body.copy = BodyCopy(MAX_SAMPLE_BODY)
                sampled = (reply.tap, body.copy if body is not None else None)

        # -- attempt and relay -----------------------------------------------------------
        watch = _Watch(cycle, receive, body, task)
        route_metrics = state.metrics
        metrics = route_metrics.backends[backend.name]
        route_metrics.active += 1
        tunnelled = False
        answered_by = backend
        trail = record.events if record is not None else None
        try:
            if upgrade is not None and backend.spec.url is None:
                raise Failed(
                    UpgradeNotSupported(f"backend {backend.name!r} is a function"),
                    backend,
                    metrics,
                )
            if body is not None and (route.fallback is not None or route.retries is not None):
                # Kept to send again when it is small (docs/resilience.md).
                try:
                    await body.keep(spec.resend_body)
                except GatewayError as exc:  # the body stalled (408)
                    raise Failed(exc, backend, metrics) from None
            done = await attempt(route, state, backend, request, body, self._rng, trail)
            metrics, answer, answered_by = done.metrics, done.answer, done.backend
            if record is not None:
                record.upstream = time.perf_counter() - started_at
            if answer.status == 101 and cycle is not None:
                tunnelled = True
                route_metrics.active -= 1
                watch.stop()
                await _tunnel(answer, cycle, reply, request, metrics, answered_by.name, record)
            elif await relay(
                answer, reply, (route.name, answered_by.name), task, spec.response_headers
            ):
                metrics.error(ABORTED)
                if record is not None:
                    record.error = ABORTED
        except Failed as failed:
            metrics, answered_by = failed.metrics, failed.backend
            error = failed.error
            log.warning("%s %s: %s", _where(request, failed.backend.name), error.code, error.detail)
            reason = ERROR_REASONS.get(error.code)
            if reason is not None:
                metrics.error(reason)
            if record is not None:
                record.error = error.code
            if not reply.started:
                await reply.error(error)
        except ClientDisconnected:
            log.info("%s client disconnected while sending its body", _where(request, backend.name))
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            log.info(
                "%s client disconnected; upstream request abandoned", _where(request, backend.name)
            )
        finally:
            watch.stop()
            # ---- record -------------------------------------------------------------------------
            elapsed = time.perf_counter() - started_at
            if not tunnelled:
                route_metrics.active -= 1
                metrics.count(method, reply.status or CLIENT_CLOSED, elapsed)
            if job is not None:
                job.finish(reply.complete)
            if inventory is not None and answered_by.kind is Kind.LEGACY:
                if template is None:
                    template = inventory.template(resolved.path)
                status = reply.status or CLIENT_CLOSED
                inventory.count(answered_by.name, route.name, method, template, status)
                if sampled is not None and answered_by is backend and reply.complete:
                    self._sample(inventory, backend.name, request, headers, template, sampled)
            if record is not None:
                record.status, record.duration = reply.status or CLIENT_CLOSED, elapsed
                record.backend, record.kind = answered_by.name, answered_by.kind.value
                record.attempts = len(record.events) + 1
                if answered_by is not backend:
                    record.fallback = answered_by.name
                if not tunnelled:
                    record.bytes_in = body.received if body is not None else 0
                    record.bytes_out = reply.sent
                self._finish(record)

    async def _authorize(
        self,
        authorizer: Authorizer,
        optional: bool,
        request: ProxyRequest,
        headers: RawHeaders,
        reply: Reply,
        record: Finished | None,
        started_at: float,
    ) -> bool:
        """Ask the route's authorizer (docs/authorizers.md). Allowed: the identity goes onto
        ``request`` and True. Otherwise the client has its answer (the denial, 401, 403 or
        503), the request is logged, and False; with ``optional``, a request without the
        identity or denied goes on unauthenticated (True) and only a failure stops it."""
        waited = time.perf_counter()
        result = "error"
        error: GatewayError | None = None
        outcome: Outcome | None = None
        try:
            result, outcome = await authorizer.decide(request, headers)
        except AuthorizerUnavailable as exc:
            log.warning("%s %s: %s", _where(request, NONE), exc.code, exc.detail)
            error = exc
        finally:
            if record is not None:
                record.authorizer, record.authorizer_result = authorizer.name, result
                record.authorizer_wait = time.perf_counter() - waited
        if isinstance(outcome, Allow):
            request.headers += outcome.headers
            request.identity = outcome.context
            return True
        if error is None and optional:
            return True
        if error is not None:
            await reply.error(error)
        elif outcome is None:
            await reply.error(Unauthorized("this route needs an identity the request lacks"))
        elif outcome.error is not None:
            await reply.error(outcome.error)
        else:
            # The authorizer's own answer (a login redirect, its 401 page), as it sent it.
            denial = [*outcome.headers, (b"x-request-id", request.request_id.encode("ascii"))]
            if outcome.status not in (204, 304):
                denial.append((b"content-length", b"%d" % len(outcome.body)))
            await reply.start(outcome.status, denial, outcome.body, False)
        if record is not None:
            record.status, record.duration = reply.status, time.perf_counter() - started_at
            record.error = error.code if error is not None else None
            if outcome is None and error is None:
                record.error = Unauthorized.code
            elif isinstance(outcome, Deny) and outcome.error is not None:
                record.error = outcome.error.code
            record.bytes_out = reply.sent
            self._finish(record)
        return False

    @staticmethod
    def _sample(
        inventory: Inventory,
        backend: str,
        request: ProxyRequest,
        headers: RawHeaders,
        template: str,
        taps: tuple[ResponseTap, BodyCopy | None],
    ) -> None:
        """Keep the exchange the legacy backend just answered whole, as the client sent and
        got it (the inventory redacts it)."""
        answer, copy = taps
        sent = answer.captured
        # A body the backend answered before it had all of it is not the request it got.
        whole = copy is None or (not copy.too_large and copy.done.done())
        body = b"" if copy is None else bytes(copy.copy) if whole else None
        inventory.add_sample(
            backend,
            request.method,
            template,
            (request.path, request.query, headers, body),
            (sent.status, sent.headers, None if sent.too_large else bytes(sent.body)),
        )

    def _record(
        self, scope: Scope, head: RequestHead, request_id: str, trace: TraceContext, method: str
    ) -> Finished:
        """The request's record, before it is routed (route "none" until it is)."""
        client = scope.get("client")
        return Finished(
            started_at=time.time(),
            request_id=request_id,
            trace=trace,
            # The peer until the route's forwarding rules say who the client is.
            client_ip=client[0] if client else "",
            method=method,
            path=scope.get("path", ""),
            route=NONE,
            backend=NONE,
            kind=NONE,
            user_agent=head.user_agent.decode("latin-1") if head.user_agent else None,
        )

    def _finish(self, record: Finished) -> None:
        if self._access_log is not None:
            self._access_log.write(record)
        if self._spans is not None:
            self._spans.export(record)

    def _check(self, scope: Scope, head: RequestHead, method: str) -> bytes:
        """The raw path, once the request has passed the checks that need no table."""
        limits = self._limits
        if head.count > limits.max_headers:
            raise HeadersTooLarge(f"more than {limits.max_headers} header fields")
        if head.size > limits.max_header_bytes:
            raise HeadersTooLarge(f"header fields larger than {limits.max_header_bytes} bytes")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
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
        return raw_path


async def _tunnel(
    answer: Answer,
    cycle: Cycle,
    reply: Reply,
    request: ProxyRequest,
    metrics: BackendMetrics,
    backend: str,
    record: Finished | None,
) -> None:
    """The backend switched protocols: its 101 to the client, then bytes both ways until the
    tunnel ends (either side closes, it stays idle, or this task is cancelled: the drain's end).
    Counted once, as the 101, when it opens (docs/forwarding.md, "Upgrades")."""
    stream = answer.stream
    assert stream is not None
    headers = client_response_headers(answer.headers, request.request_id, 101)
    headers += ((b"connection", b"upgrade"), (b"upgrade", b"websocket"))
    if reply.extra_headers:
        headers += reply.extra_headers
    tunnel = Tunnel(request.task.get_loop(), answer.idle_timeout)
    try:
        cycle.switch(headers, tunnel)
        stream.switch(tunnel)
    except BaseException:
        answer.close(None)
        raise
    reply.started = reply.complete = True
    reply.status = 101
    metrics.switched(request.method)
    tunnel.start()
    try:
        await tunnel.closed
    finally:
        tunnel.end()
        answer.close(False)
        metrics.tunnel_closed()
        if record is not None:
            record.bytes_in, record.bytes_out = tunnel.moved
        log.info(
            "%s tunnel closed by the %s after %d bytes up, %d down",
            _where(request, backend),
            tunnel.ended_by,
            *tunnel.moved,
        )


def _listener_host(scope: Scope) -> tuple[bytes | None, str | None]:
    """The Host value and name of the address a request came in on (the port left out when it
    is the scheme's own), or None for both when the server does not say."""
    server = scope.get("server")
    if not server:
        return None, None
    address, port = server[0], server[1]
    name = f"[{address}]" if ":" in address else address
    default = 443 if scope.get("scheme") == "https" else 80
    value = name if port is None or port == default else f"{name}:{port}"
    return value.encode("ascii"), address


def _where(request: ProxyRequest, backend: str) -> str:
    return f"route={request.route} backend={backend} request_id={request.request_id}"


class _Watch:
    """Cancels the request's task when its client goes away before the response is complete,
    so the upstream exchange is abandoned instead of running on for nobody. The connection
    says so itself (the ``strangler.cycle`` extension); under another ASGI server, a task
    waits for ``http.disconnect`` once the body has been read."""

    __slots__ = ("_cycle", "_receive", "_task", "_watcher", "fired")

    def __init__(
        self, cycle: Cycle | None, receive: Receive, body: _Body | None, task: asyncio.Task[Any]
    ) -> None:
        self.fired = False
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._cycle = cycle
        if cycle is not None:
            cycle.on_disconnect = self._gone
        elif body is None:
            self.start()
        else:
            body.watch = self

    def _gone(self) -> None:
        self.fired = True
        self._task.cancel()

    def start(self) -> None:
        if self._cycle is None and self._watcher is None:
            self._watcher = self._task.get_loop().create_task(self._wait())

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone()

    def absorb(self) -> bool:
        """Whether the cancellation was this watch's (then it is taken back)."""
        return self.fired and self._task.uncancel() == 0

    def stop(self) -> None:
        if self._cycle is not None:
            self._cycle.on_disconnect = None
        if self._watcher is not None:
            self._watcher.cancel()


class _Body:
    """The request body as it arrives, whether anyone has started reading it (then it cannot
    be sent again, to a fallback), and where a shadow's copy of it goes. A small body may be
    kept whole first (:meth:`keep`): it is then sent as often as asked, never "started"."""

    __slots__ = (
        "_ahead",
        "_idle_timeout",
        "_receive",
        "_source",
        "copy",
        "kept",
        "received",
        "started",
        "watch",
    )

    def __init__(self, receive: Receive, idle_timeout: float) -> None:
        self._receive = receive
        self._idle_timeout = idle_timeout
        self.started = False
        #: Body bytes received so far.
        self.received = 0
        self.copy: BodyCopy | None = None
        #: Started once the body is complete, under servers that need a watching task.
        self.watch: _Watch | None = None
        #: The whole body, when :meth:`keep` found it within its limit.
        self.kept: bytes | None = None
        # Read ahead by keep() past its limit, and the rest still to come.
        self._ahead = b""
        self._source: AsyncIterator[bytes] | None = None

    async def keep(self, limit: int) -> None:
        """Read the body ahead, up to ``limit`` bytes: when it all fits, it is kept in memory
        and may be sent again (to a fallback, on a retry; docs/resilience.md); else what was
        read goes first when the body is read, then the rest as it arrives."""
        source = self._chunks()
        pieces: list[bytes] = []
        size = 0
        async for chunk in source:
            pieces.append(chunk)
            size += len(chunk)
            if size > limit:
                self._ahead, self._source = b"".join(pieces), source
                return
        self.kept = b"".join(pieces)

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self.kept is not None:
            return _once(self.kept)
        self.started = True
        if self._source is not None:
            return _after(self._ahead, self._source)
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The request body as it arrives. A client that sends nothing for the idle timeout
        mid-body gets 408."""
        receive, copy, idle_timeout = self._receive, self.copy, self._idle_timeout
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
            self.received += len(chunk)
            if copy is not None:
                copy.add(chunk)
            if not message.get("more_body", False):
                if self.watch is not None:
                    self.watch.start()
                if copy is not None:
                    copy.finish()
                if chunk:
                    yield chunk
                return
            if chunk:
                yield chunk


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
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
