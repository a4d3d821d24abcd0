"""Backend kinds behind one interface; :func:`backend_factory` builds them from the model."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from proxy.backends.base import Backend
from proxy.backends.function import FunctionBackend
from proxy.backends.guarded import GuardedBackend
from proxy.backends.http import HttpBackend
from proxy.backends.remote import LambdaBackend
from proxy.metrics import Metrics
from proxy.table import model


def backend_factory(
    client: httpx.AsyncClient, transport: httpx.AsyncBaseTransport, metrics: Metrics
) -> Callable[[model.Backend], Backend]:
    """A factory that builds each backend of a table around the process's shared client and
    its transport (url backends use the transport directly), behind its circuit breaker when
    it has one."""

    def make(spec: model.Backend) -> Backend:
        backend: Backend
        if spec.url is not None:
            backend = HttpBackend(spec, transport)
        elif spec.function is not None:
            backend = FunctionBackend(spec)
        else:
            backend = LambdaBackend(spec, client)
        if spec.circuit_breaker is None:
            return backend
        return GuardedBackend(backend, spec.circuit_breaker, metrics)

    return make
