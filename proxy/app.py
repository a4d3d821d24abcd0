"""The factory that wires one gateway process together and owns what it creates.

Everything with a lifetime (the upstream client, the live table, the admin app) is made here,
per call, never at import: two apps in one process are independent, and tests pass their own
transport and random source.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy import __version__
from proxy.accesslog import AccessLog
from proxy.admin import create_admin
from proxy.admin_access import AdminAccess
from proxy.asgi import ASGIApp
from proxy.backends import backend_factory
from proxy.backends.adapters import ClientTransport, HttpxUpstream, new_client
from proxy.backends.transport import Transport
from proxy.clientaddr import TrustedProxies, parse_networks
from proxy.gateway import Gateway
from proxy.inventory import Inventory
from proxy.live import publish
from proxy.metrics import Metrics
from proxy.reloader import Reloader
from proxy.routes import compile_table
from proxy.runtime import Runtime
from proxy.settings import Settings
from proxy.shadow import Shadower
from proxy.spans import SpanExporter
from proxy.table.loader import load_table

#: With workers, how often a worker's metric tallies reach the files every worker reads.
METRICS_FLUSH_SECONDS = 1.0


@dataclass(slots=True)
class Application:
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    client: httpx.AsyncClient
    upstream: Transport | HttpxUpstream
    reloader: Reloader
    public: Gateway
    admin: ASGIApp
    shadower: Shadower
    access_log: AccessLog | None = None
    spans: SpanExporter | None = None
    inventory: Inventory | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> None:
        """Start watching the table's directory, unless ``settings.watch`` is off."""
        await self.shadower.start()
        if self.metrics.multiprocess_dir is not None:
            # Other workers answer scrapes too: each worker's tallies reach the shared files
            # within a second (a scrape this worker answers flushes first).
            task = asyncio.get_running_loop().create_task(self._flush_metrics())
            self._background.add(task)
        if self.settings.watch and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self.reloader.watch(self._stop))

    def start_draining(self) -> None:
        """Stop being ready (``/readyz`` answers 503) ahead of a shutdown."""
        self.runtime.draining = True

    def request_reload(self, trigger: str) -> None:
        """Reload in the background (for signal handlers, which cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reloader.reload(trigger))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush_metrics(self) -> None:
        directory = self.metrics.multiprocess_dir
        while not self._stop.is_set():
            self.metrics.flush()
            if self.inventory is not None and directory is not None:
                self.inventory.save(directory)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), METRICS_FLUSH_SECONDS)
        self.metrics.flush()
        if self.inventory is not None and directory is not None:
            self.inventory.save(directory)

    async def aclose(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            await self._watcher
        for task in list(self._background):
            await task
        await self.reloader.aclose()
        await self.shadower.aclose()
        for backend in self.runtime.table.backends.values():
            await backend.aclose()
        for authorizer in self.runtime.table.authorizers.values():
            await authorizer.aclose()
        await self.client.aclose()
        await self.upstream.aclose()
        if self.access_log is not None:
            self.access_log.close()
        if self.spans is not None:
            # Blocks for up to its timeout (a collector that hangs): off the event loop.
            await asyncio.to_thread(self.spans.shutdown)


def _tell_supervisor() -> None:
    """A worker's admin API reloaded a new table: the supervisor's SIGHUP reloads the others
    (and this one again, which is a no-op)."""
    os.kill(os.getppid(), signal.SIGHUP)


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> Application:
    """Load and compile the table at ``settings.config`` (raising
    :class:`~proxy.table.loader.TableError`) and build both ASGI apps around it. ``transport``
    replaces the upstream transport (tests pass ``httpx.MockTransport``)."""
    upstream: Transport | HttpxUpstream
    if transport is None:
        upstream = Transport()
        client = new_client(ClientTransport(upstream))
    else:
        upstream = HttpxUpstream(transport)
        client = new_client(transport)
    metrics = Metrics(__version__, settings.metrics_dir)
    make_backend = backend_factory(client, upstream)
    table = compile_table(load_table(settings.config), make_backend)
    runtime = Runtime(publish(table, metrics))
    reloader = Reloader(settings.config, runtime, metrics, make_backend)
    shadower = Shadower()
    access_log = AccessLog() if settings.access_log == "json" else None
    if access_log is not None:
        metrics.count_drops("access_log", lambda: access_log.dropped)
    inventory = None
    if settings.inventory == "on":
        inventory = Inventory(frozenset(h.encode("latin-1") for h in settings.redact_headers))
    spans = None
    if settings.otlp_endpoint is not None:
        spans = SpanExporter(settings.otlp_endpoint, __version__)
        metrics.count_drops("spans", lambda: spans.dropped)
    return Application(
        settings=settings,
        runtime=runtime,
        metrics=metrics,
        client=client,
        upstream=upstream,
        reloader=reloader,
        public=Gateway(
            runtime,
            metrics,
            rng or random.Random(),
            TrustedProxies(parse_networks(settings.trusted_proxies)),
            settings.limits,
            shadower,
            access_log,
            spans,
            inventory,
        ),
        admin=create_admin(
            runtime,
            metrics,
            reloader,
            _tell_supervisor if settings.supervised else None,
            shadower,
            AdminAccess(settings.admin_host, settings.admin_allowed_hosts),
            inventory,
        ),
        shadower=shadower,
        access_log=access_log,
        spans=spans,
        inventory=inventory,
    )
