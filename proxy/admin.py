"""The admin app (docs/reference.md, "The admin API"), served on its own port, never on
the public one.

It reads the same live snapshot as the gateway and never changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from proxy.admin_access import AdminAccess, cross_site, guarded, json_request
from proxy.admin_page import render_page
from proxy.asgi import ASGIApp
from proxy.backends.guarded import GuardedBackend
from proxy.inventory import Inventory, merge, worker_snapshots
from proxy.metrics import Metrics
from proxy.migration import migration_report
from proxy.reloader import Reloader, problem_json
from proxy.rollouts import rollouts_report
from proxy.routes import CompiledTable
from proxy.runtime import Runtime
from proxy.shadow import Shadower
from proxy.table.model import WEIGHT_SCALE, Backend, Retries, Sticky
from proxy.timefmt import iso_time


def create_admin(
    runtime: Runtime,
    metrics: Metrics,
    reloader: Reloader,
    on_new_table: Callable[[], None] | None = None,
    shadower: Shadower | None = None,
    access: AdminAccess | None = None,
    inventory: Inventory | None = None,
) -> ASGIApp:
    """``on_new_table`` runs after ``POST /reload`` loaded a changed table (with workers, it
    passes the reload on to the others); ``access`` says which Host names the port answers to
    (:mod:`proxy.admin_access`)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready", "version": runtime.table.version})

    async def routes(request: Request) -> Response:
        return JSONResponse({**describe_table(runtime.table), "last_error": runtime.last_error})

    async def reload(request: Request) -> Response:
        headers = dict(request.headers)
        if cross_site(headers):
            return JSONResponse(
                {"error": "forbidden", "message": "a cross-site request may not reload the table"},
                status_code=403,
            )
        if not json_request(headers):
            return JSONResponse(
                {
                    "error": "unsupported_media_type",
                    "message": "ask for a reload with Content-Type: application/json",
                },
                status_code=415,
            )
        result = await reloader.reload("admin")
        if not result.ok:
            return JSONResponse(
                {
                    "error": "invalid_table",
                    "message": f"the table was rejected; version {result.version} keeps serving",
                    "version": result.version,
                    "errors": [problem_json(p) for p in result.problems],
                },
                status_code=422,
            )
        if result.changed and on_new_table is not None:
            on_new_table()
        return JSONResponse(
            {
                "version": result.version,
                "changed": result.changed,
                "loaded_at": iso_time(runtime.table.loaded_at),
            }
        )

    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def shadow(request: Request) -> Response:
        return JSONResponse(_shadow_report(runtime.table, shadower))

    async def migration(request: Request) -> Response:
        return JSONResponse(migration_report(runtime.table, metrics))

    def inventory_report(samples: bool) -> dict[str, Any]:
        """This process's inventory, and with workers every other worker's too."""
        if inventory is None:
            return {"backends": [], "enabled": False}
        snapshots = [inventory.snapshot()]
        directory = metrics.multiprocess_dir
        if directory is not None:
            snapshots += worker_snapshots(directory)
        kinds = {name: b.kind.value for name, b in runtime.table.backends.items()}
        return {**merge(snapshots, kinds, samples), "enabled": True}

    async def inventory_endpoint(request: Request) -> Response:
        return JSONResponse(inventory_report(request.query_params.get("samples") == "1"))

    async def rollouts(request: Request) -> Response:
        return JSONResponse(rollouts_report(runtime.table))

    async def page(request: Request) -> Response:
        report = migration_report(runtime.table, metrics)
        return HTMLResponse(
            render_page(
                report,
                runtime.last_error,
                circuit_states(runtime.table),
                _shadow_report(runtime.table, shadower)["routes"],
                rollouts_report(runtime.table)["routes"],
                inventory_report(False)["backends"],
            )
        )

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/routes", routes, methods=["GET"]),
            Route("/metrics", exposition, methods=["GET"]),
            Route("/migration", migration, methods=["GET"]),
            Route("/shadow", shadow, methods=["GET"]),
            Route("/rollouts", rollouts, methods=["GET"]),
            Route("/inventory", inventory_endpoint, methods=["GET"]),
            Route("/reload", reload, methods=["POST"]),
        ]
    )
    return guarded(app, access or AdminAccess("127.0.0.1"))


def describe_table(table: CompiledTable) -> dict[str, Any]:
    """The active table as JSON: routes in the order they are tried, and the backends."""
    return {
        "version": table.version,
        "source": table.model.source,
        "loaded_at": iso_time(table.loaded_at),
        "routes": [
            {
                "name": route.name,
                "path": route.pattern.text,
                "methods": sorted(route.methods) if route.methods is not None else None,
                "host": route.host,
                "headers": {n.decode(): v.decode() for n, v in route.headers},
                "backends": [
                    {"name": b.name, "kind": b.kind.value, "weight": w * 100 / WEIGHT_SCALE}
                    for b, w in route.backends
                ],
                "sticky": _sticky(route.spec.sticky),
                "fallback": route.fallback.name if route.fallback is not None else None,
                "fallback_statuses": sorted(route.fallback_statuses),
                "retries": _retries(route.retries),
                "line": route.spec.location.line,
            }
            for route in table.router.routes
        ],
        "backends": [
            {
                "name": name,
                "kind": spec.kind.value,
                "type": _target_type(spec),
                "target": spec.url or spec.function or spec.lambda_url,
                "timeout": spec.timeout,
                "circuit_breaker": _circuit(table.backends[name]),
            }
            for name, spec in table.model.backends.items()
        ],
    }


def _shadow_report(table: CompiledTable, shadower: Shadower | None) -> dict[str, Any]:
    routes = {r.name: r.shadow for r in table.router.routes if r.shadow is not None}
    if shadower is None:
        return {"routes": []}
    return shadower.report(dict(sorted(routes.items())))


def circuit_states(table: CompiledTable) -> dict[str, str]:
    """The state of every backend's circuit breaker, for backends that have one."""
    return {
        name: backend.breaker.state.value
        for name, backend in table.backends.items()
        if isinstance(backend, GuardedBackend)
    }


def _circuit(backend: object) -> dict[str, Any] | None:
    if not isinstance(backend, GuardedBackend):
        return None
    breaker = backend.breaker
    requests, failures = breaker.window()
    return {
        "state": breaker.state.value,
        **asdict(breaker.spec),
        "window_requests": requests,
        "window_failures": failures,
    }


def _retries(retries: Retries | None) -> dict[str, Any] | None:
    if retries is None:
        return None
    return {
        "attempts": retries.attempts,
        "retry_on": sorted(retries.on),
        "statuses": sorted(retries.statuses),
        "budget": {"ratio": retries.budget_ratio, "min_per_second": retries.budget_min_per_second},
    }


def _target_type(spec: Backend) -> str:
    if spec.url is not None:
        return "url"
    return "function" if spec.function is not None else "lambda"


def _sticky(sticky: Sticky | None) -> dict[str, Any] | None:
    if sticky is None:
        return None
    if sticky.cookie is not None:
        return {"cookie": sticky.cookie, "set": sticky.set_cookie}
    return {"header": sticky.header}
