"""A backend behind its circuit breaker: refused with 503 ``circuit_open`` while the breaker
is open, and every answer reported to the breaker.

A wrapper, so backend kinds know nothing of breakers and the gateway nothing of their state;
only backends that configure ``circuit_breaker`` pay for it.
"""

from __future__ import annotations

import asyncio

from proxy.asgi import Message, Send
from proxy.backends.base import Backend, ProxyRequest
from proxy.breaker import CircuitBreaker, State
from proxy.errors import CircuitOpen, GatewayError, StreamAborted
from proxy.metrics import Metrics
from proxy.table import model


class GuardedBackend:
    def __init__(self, inner: Backend, spec: model.CircuitBreaker, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.spec = inner.spec
        self._metrics = metrics
        self.breaker = CircuitBreaker(spec, self._changed)

    def _changed(self, state: State) -> None:
        self._metrics.breaker_changed(self.name, self, state.value)

    async def handle(self, request: ProxyRequest, send: Send) -> None:
        breaker = self.breaker
        if not breaker.allow():
            raise CircuitOpen(f"backend {self.name!r} is failing; its circuit is open")
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.inner.handle(request, observe)
        except GatewayError as exc:
            if exc.backend_failure:
                breaker.failure()
            else:
                breaker.neutral()
            raise
        except StreamAborted:
            breaker.failure()
            raise
        except (Exception, asyncio.CancelledError):
            # The client went away, or the gateway itself failed: nothing learnt.
            breaker.neutral()
            raise
        if status >= 500:
            breaker.failure()
        elif status:
            breaker.success()
        else:
            breaker.neutral()

    async def aclose(self) -> None:
        self._metrics.breaker_removed(self.name, self)
        await self.inner.aclose()
