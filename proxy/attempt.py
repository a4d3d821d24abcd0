"""The attempt stage: ask the chosen backend, and decide from what came back whether to ask
again (``retries``) or ask the route's ``fallback`` instead, until an answer is kept or a
failure is final.

Everything steers by return values: a backend returns an answer or raises its error; an answer
whose status the route lists is *held* (read whole, up to 64 KiB, before anything reaches the
client) and judged here like a failure, and when nothing else may answer it is the one the
client gets, unchanged. What may be sent twice is decided here alone (docs/resilience.md):
a connect failure for any method, a reset, timeout or listed status only for idempotent ones,
never once the request body has started to be read. This module sends nothing to the client
and keeps no state beyond one request; the route's budget and metrics are given to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.backends.base import Answer, Backend, ProxyRequest
from proxy.errors import GatewayError, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from proxy.live import RouteState
from proxy.metrics import ERROR_REASONS, BackendMetrics
from proxy.routes import CompiledRoute
from proxy.table import model
from proxy.table.model import IDEMPOTENT_METHODS

log = logging.getLogger("strangler.gateway")

#: A response held back while deciding whether to try elsewhere (its status is listed in
#: ``statuses``) must fit in this; a larger one goes to the client as it is.
HELD_RESPONSE_LIMIT = 64 * 1024
#: Retries wait a random time up to this, doubling per retry up to the cap (full jitter, as
#: Envoy's defaults): an immediate retry mostly meets the same failure.
RETRY_BACKOFF = 0.025
RETRY_BACKOFF_MAX = 0.25
_NOTHING: frozenset[int] = frozenset()


class BodyState(Protocol):
    """Whether the request body has started to be read (then it cannot be sent again), or is
    kept whole in memory (then it can, as often as asked)."""

    started: bool
    kept: bytes | None


@dataclass(slots=True)
class Attempted:
    """The answer kept, and the metrics of the backend that gave it."""

    answer: Answer
    backend: Backend
    metrics: BackendMetrics


#: What happened on the way, for the request's span: (name, Unix time, attributes).
Trail = list[tuple[str, float, dict[str, Any]]]


class Failed(Exception):
    """The final failure of a request's attempts, with the metrics of the backend it is
    counted against (the last one asked)."""

    def __init__(self, error: GatewayError, backend: Backend, metrics: BackendMetrics) -> None:
        super().__init__(error)
        self.error = error
        self.backend = backend
        self.metrics = metrics


async def attempt(
    route: CompiledRoute,
    state: RouteState,
    backend: Backend,
    request: ProxyRequest,
    body: BodyState | None,
    rng: random.Random,
    trail: Trail | None = None,
) -> Attempted:
    """The answer the client is to get, or :class:`Failed`. Each retry and fallback is added
    to ``trail`` when one is given (its length plus one is the number of attempts)."""
    retries, budget = route.retries, state.budget
    if budget is not None:
        budget.request()
    backends = state.metrics.backends
    metrics = backends[backend.name]
    retried = 0
    on_fallback = False
    while True:
        held = _held_statuses(route, backend, request, body, retried, on_fallback)
        error: GatewayError
        try:
            answer = await backend.call(request)
        except GatewayError as exc:
            error = exc
        else:
            if answer.status not in held or not await _hold(answer):
                return Attempted(answer, backend, metrics)
            error = UpstreamStatus(answer)
        if body is not None and body.started:
            raise Failed(error, backend, metrics)
        reason = None
        if retries is not None and not on_fallback and retried < retries.attempts:
            reason = _retry_reason(retries, request.method, error)
        if reason is not None and budget is not None:
            if budget.try_retry():
                log.info("%s %s: %s; retrying", _where(request, backend), error.code, error.detail)
                _count_error(metrics, error)
                metrics.retried(reason)
                if trail is not None:
                    trail.append(("retry", time.time(), {"reason": reason, "error": error.code}))
                _discard(error)
                retried += 1
                cap = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2 ** (retried - 1))
                await asyncio.sleep(rng.uniform(0, cap))
                continue
            state.metrics.budget_exhausted()
        fallback = None if on_fallback else _may_fall_back(route, backend, request, body, error)
        if fallback is None:
            if isinstance(error, UpstreamStatus):
                # Nowhere else to go: the client gets the backend's own answer.
                return Attempted(error.answer, backend, metrics)
            raise Failed(error, backend, metrics)
        log.warning(
            "%s %s: %s; the fallback %s answers",
            _where(request, backend),
            error.code,
            error.detail,
            fallback.name,
        )
        _count_error(metrics, error)
        metrics.fell_back(fallback.name, _fallback_reason(error))
        if trail is not None:
            trail.append(
                (
                    "fallback",
                    time.time(),
                    {"from": backend.name, "to": fallback.name, "error": error.code},
                )
            )
        _discard(error)
        backend, on_fallback = fallback, True
        metrics = backends[fallback.name]


async def _hold(answer: Answer) -> bool:
    """Wait for a held answer's whole body: True when it fits in the limit (the answer may then
    be replaced), False when it is too large (it goes to the client as it is)."""
    return answer.stream is None or await answer.stream.hold(HELD_RESPONSE_LIMIT)


def _discard(error: GatewayError) -> None:
    """A held answer that another attempt replaces is closed unsent."""
    if isinstance(error, UpstreamStatus):
        error.answer.close()


def _held_statuses(
    route: CompiledRoute,
    backend: Backend,
    request: ProxyRequest,
    body: BodyState | None,
    retried: int,
    on_fallback: bool,
) -> frozenset[int]:
    """The upstream statuses that would send this attempt's request elsewhere, so its response
    is held back: only for a request that can be sent again (no body, or one kept whole: a
    streamed body is spent once sent), idempotent for a retry, idempotent or on a route with
    ``unsafe_methods`` for the fallback, and never on the fallback, the last resort."""
    if not route.held_statuses or on_fallback or not _resendable(request, body):
        return _NOTHING
    idempotent = request.method in IDEMPOTENT_METHODS
    retry = route.retry_statuses if idempotent and _may_retry(route, retried) else _NOTHING
    if route.fallback is backend:
        # Chosen by the split and failing: only retries could try again.
        return retry
    if idempotent or route.spec.fallback_unsafe_methods:
        return retry | route.fallback_statuses
    return retry


def _resendable(request: ProxyRequest, body: BodyState | None) -> bool:
    return request.body is None or (body is not None and body.kept is not None)


def _fallback_reason(error: GatewayError) -> str:
    """The ``reason`` label of a fall-through: a listed status, an open circuit, or an error."""
    if isinstance(error, UpstreamStatus):
        return "status"
    return "circuit_open" if error.code == "circuit_open" else "error"


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
    route: CompiledRoute,
    backend: Backend,
    request: ProxyRequest,
    body: BodyState | None,
    error: GatewayError,
) -> Backend | None:
    """The route's fallback when it may answer instead: the request provably never reached the
    failing backend, or it can be sent again (no body, or one kept whole) and its method is
    idempotent or the route allows others (``unsafe_methods``); a status only when listed."""
    fallback = route.fallback
    if fallback is None or fallback is backend:
        return None
    if isinstance(error, UpstreamStatus):
        return fallback if error.status in route.fallback_statuses else None
    if error.never_sent:
        return fallback
    may = request.method in IDEMPOTENT_METHODS or route.spec.fallback_unsafe_methods
    return fallback if may and _resendable(request, body) else None


def _where(request: ProxyRequest, backend: Backend) -> str:
    return f"route={request.route} backend={backend.name} request_id={request.request_id}"


def _count_error(metrics: BackendMetrics, error: GatewayError) -> None:
    reason = ERROR_REASONS.get(error.code)
    if reason is not None:
        metrics.error(reason)
