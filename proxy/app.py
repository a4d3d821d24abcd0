"""The factory that wires one gateway process together and owns what it creates.

Everything with a lifetime (the upstream client, the live table, the admin app) is made here,
per call, never at import: two apps in one process are independent, and tests pass their own
transport and random source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette

from proxy import __version__
from proxy.admin import create_admin
from proxy.backends import backend_factory
from proxy.backends.http import new_client
from proxy.gateway import Gateway
from proxy.metrics import Metrics
from proxy.runtime import Runtime
from proxy.settings import Settings
from proxy.table.compile import compile_table
from proxy.table.loader import load_table


@dataclass(slots=True)
class Application:
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    client: httpx.AsyncClient
    public: Gateway
    admin: Starlette

    async def aclose(self) -> None:
        for backend in self.runtime.table.backends.values():
            await backend.aclose()
        await self.client.aclose()


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Application:
    """Load and compile the table at ``settings.config`` (raising
    :class:`~proxy.table.loader.TableError`) and build both ASGI apps around it."""
    client = new_client(transport)
    metrics = Metrics(__version__)
    table = compile_table(load_table(settings.config), backend_factory(client), metrics)
    metrics.table_loaded(table.loaded_at)
    runtime = Runtime(table)
    return Application(
        settings=settings,
        runtime=runtime,
        metrics=metrics,
        client=client,
        public=Gateway(runtime, metrics, rng or random.Random()),
        admin=create_admin(runtime, metrics),
    )
