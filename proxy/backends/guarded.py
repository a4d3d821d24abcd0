"""A backend behind its circuit breaker: refused with 503 ``circuit_open`` while the breaker
is open, and every answer reported to the breaker.

A wrapper, so backend kinds know nothing of breakers and the gateway nothing of their state;
only backends that configure ``circuit_breaker`` pay for it. Building one publishes nothing: its
state reaches the metrics only when :meth:`publish` is called, once the table it belongs to is
known good (a rejected reload must not touch the live gauges).
"""

from __future__ import annotations

from proxy.backends.base import Answer, Backend, ProxyRequest
from proxy.breaker import CircuitBreaker, State
from proxy.errors import CircuitOpen, GatewayError
from proxy.metrics import Metrics
from proxy.table import model


class GuardedBackend:
    def __init__(self, inner: Backend, spec: model.CircuitBreaker) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.spec = inner.spec
        self.breaker = CircuitBreaker(spec)
        self._metrics: Metrics | None = None

    def publish(self, metrics: Metrics) -> None:
        """Show this breaker's state (now, and on every change) as the backend's."""
        self._metrics = metrics
        self.breaker.on_change = self._changed
        self._changed(self.breaker.state)

    def retire(self) -> None:
        """A newer table has replaced this backend: its breaker (still judging requests that
        finish on the old table) no longer speaks for the backend's gauge."""
        self.breaker.on_change = None

    def _changed(self, state: State) -> None:
        if self._metrics is not None:
            self._metrics.breaker_changed(self.name, self, state.value)

    async def call(self, request: ProxyRequest) -> Answer:
        breaker = self.breaker
        if not breaker.allow():
            raise CircuitOpen(f"backend {self.name!r} is failing; its circuit is open")
        try:
            answer = await self.inner.call(request)
        except GatewayError as exc:
            if exc.backend_failure:
                breaker.failure()
            else:
                breaker.neutral()
            raise
        except BaseException:
            # The client went away, or the gateway itself failed: nothing learnt.
            breaker.neutral()
            raise
        if answer.status >= 500:
            breaker.failure()
        elif answer.stream is None:
            breaker.success()
        else:
            # Judged when the body has been relayed: one that breaks on the way is a failure.
            answer.also_on_close(self._judge)
        return answer

    def _judge(self, failed: bool | None) -> None:
        if failed is None:
            self.breaker.neutral()
        elif failed:
            self.breaker.failure()
        else:
            self.breaker.success()

    async def aclose(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_removed(self.name, self)
        await self.inner.aclose()
