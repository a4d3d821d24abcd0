"""Backend kinds behind one interface; :func:`backend_factory` builds them from the model."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from proxy.backends.base import Backend
from proxy.backends.function import FunctionBackend
from proxy.backends.guarded import GuardedBackend
from proxy.backends.http import HttpBackend, Upstream
from proxy.backends.remote import LambdaBackend
from proxy.table import model


def backend_factory(
    client: httpx.AsyncClient, upstream: Upstream
) -> Callable[[model.Backend], Backend]:
    """A factory that builds each backend of a table: url backends on ``upstream`` (the
    process's transport), lambda backends on the httpx ``client``, behind its circuit breaker
    when it has one. Building touches no metrics (see GuardedBackend.publish)."""

    def make(spec: model.Backend) -> Backend:
        backend: Backend
        if spec.url is not None:
            backend = HttpBackend(spec, upstream)
        elif spec.function is not None:
            backend = FunctionBackend(spec)
        else:
            backend = LambdaBackend(spec, client)
        if spec.circuit_breaker is None:
            return backend
        return GuardedBackend(backend, spec.circuit_breaker)

    return make
