"""Backend kinds behind one interface; :func:`backend_factory` builds them from the model."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from proxy.backends.base import Backend
from proxy.backends.function import FunctionBackend
from proxy.backends.http import HttpBackend
from proxy.backends.remote import LambdaBackend
from proxy.table import model


def backend_factory(client: httpx.AsyncClient) -> Callable[[model.Backend], Backend]:
    """A factory that builds each backend of a table around the process's shared client."""

    def make(spec: model.Backend) -> Backend:
        if spec.url is not None:
            return HttpBackend(spec, client)
        if spec.function is not None:
            return FunctionBackend(spec)
        return LambdaBackend(spec, client)

    return make
