"""A compiled table published for serving: what each of its routes needs at run time, bound
only once the whole table is known good.

:func:`publish` is the second step of loading a table (the first, ``compile_table`` in
proxy/routes.py, is pure): it binds each route's metric children and publishes its weights,
carries each route's retry budget over from the table before (a reload must not hand a failing
backend a fresh budget), publishes every circuit breaker's state, and retires the series of
routes and backends the table dropped. A rejected table never gets here, so it can never touch
a live gauge. The gateway reads one :class:`Live` per request and finds a route's state by its
slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.backends.guarded import GuardedBackend
from proxy.metrics import NONE, BackendMetrics, Metrics, RouteMetrics
from proxy.retrybudget import RetryBudget
from proxy.routes import CompiledRoute, CompiledTable, Usage
from proxy.shadow import RESULTS


@dataclass(slots=True)
class RouteState:
    metrics: RouteMetrics
    #: The route's own, when it retries.
    budget: RetryBudget | None
    #: result -> counter child of the route's shadow, when it has one.
    shadow_counters: dict[str, Any]


@dataclass(slots=True)
class Live:
    table: CompiledTable
    #: By route slot.
    routes: tuple[RouteState, ...]
    #: The metrics of requests that matched no route.
    unmatched: BackendMetrics
    #: Requests still running on this table; a reload closes the backends it dropped once
    #: the old table's last request has finished.
    usage: Usage = field(default_factory=Usage)

    def state(self, route: CompiledRoute) -> RouteState:
        return self.routes[route.slot]


def publish(table: CompiledTable, metrics: Metrics, previous: Live | None = None) -> Live:
    """Make ``table`` the one the metrics describe, and return it ready to serve."""
    budgets: dict[str, tuple[object, RetryBudget]] = {}
    if previous is not None:
        for route, state in zip(previous.table.router.routes, previous.routes, strict=True):
            if state.budget is not None:
                budgets[route.name] = (route.retries, state.budget)
    states = []
    for route in table.router.routes:
        bound = [(b.name, b.kind.value, w) for b, w in route.backends]
        fallback = route.fallback
        # The fallback answers requests too, so it has its metric children even at weight 0.
        if fallback is not None and all(b is not fallback for b, _ in route.backends):
            bound.append((fallback.name, fallback.kind.value, 0))
        route_metrics = metrics.bind_route(route.name, bound)
        shadow = route.shadow
        counters = route_metrics.bind_shadow(
            shadow.backend.name if shadow is not None else None, RESULTS
        )
        budget = None
        retries = route.retries
        if retries is not None:
            kept = budgets.get(route.name)
            budget = (
                kept[1]
                if kept is not None and kept[0] == retries
                else RetryBudget(retries.budget_ratio, retries.budget_min_per_second)
            )
        states.append(RouteState(route_metrics, budget, counters))
    for backend in table.backends.values():
        if isinstance(backend, GuardedBackend):
            backend.publish(metrics)
    if previous is not None:
        carried = {id(backend) for backend in table.backends.values()}
        for backend in previous.table.backends.values():
            if isinstance(backend, GuardedBackend) and id(backend) not in carried:
                backend.retire()
    metrics.retire({route.name: route.backend_names for route in table.router.routes})
    metrics.publish_rollouts(
        {
            route.name: route.rollout.step_of(dict(route.split)[route.rollout.to])
            for route in table.model.routes
            if route.rollout is not None
        }
    )
    children = metrics.bind_authorizers(table.authorizers)
    for name, authorizer in table.authorizers.items():
        authorizer.metrics = children[name]
    metrics.table_loaded(table.loaded_at)
    return Live(table, tuple(states), metrics.unmatched.backends[NONE])
