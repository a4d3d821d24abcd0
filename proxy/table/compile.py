"""Model -> compiled table: route patterns, conditions and weighted choices, built once.

A :class:`CompiledTable` is immutable and complete: the gateway reads one per request and does
only comparisons against it. Building backends is delegated to a factory so this module never
sees an HTTP client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.asgi import RawHeaders
from proxy.backends.base import Backend
from proxy.headers import cookie_value, header_value
from proxy.hosts import host_matches
from proxy.jsondiff import PathPatterns
from proxy.matching import Pattern, compile_pattern
from proxy.metrics import Metrics, RouteMetrics
from proxy.retrybudget import RetryBudget
from proxy.shadow import RESULTS, CompiledShadow
from proxy.splitting import Choice, Split
from proxy.table import model
from proxy.table.loader import TableError
from proxy.table.yamlnodes import Problem

BackendFactory = Callable[[model.Backend], Backend]


class Usage:
    """A count of requests using a table, and a way to wait until there are none."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.count += 1

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self) -> None:
        if self.count:
            self._idle = asyncio.Event()
            await self._idle.wait()


@dataclass(frozen=True, slots=True)
class StickyRule:
    """Where a route's sticky key is read, as the bytes the request carries."""

    cookie: bytes | None
    header: bytes | None
    set_cookie: bool

    @property
    def source(self) -> str:
        """Where the key is read, as a person would say it."""
        if self.cookie is not None:
            return f"cookie {self.cookie.decode()}"
        return f"header {(self.header or b'').decode()}"

    def key(self, headers: RawHeaders) -> str | None:
        """The request's sticky key, or None when it carries none."""
        if self.cookie is not None:
            return cookie_value(headers, self.cookie)
        return header_value(headers, self.header) if self.header is not None else None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    spec: model.Route
    pattern: Pattern
    methods: frozenset[str] | None
    host: str | None
    headers: tuple[tuple[bytes, bytes], ...]
    #: (backend, weight in basis points), in file order, zero weights included.
    backends: tuple[tuple[Backend, int], ...]
    split: Split[Backend]
    sticky: StickyRule | None
    #: Sort key: pattern specificity, then more conditions, then file order.
    precedence: tuple[tuple[int, ...], int, int]
    #: API Gateway's route key: ``GET /products/{id}`` when the route has exactly one method,
    #: ``ANY /products/{id}`` otherwise.
    route_key: str
    metrics: RouteMetrics
    fallback: Backend | None = None
    #: Upstream statuses after which the fallback answers instead.
    fallback_statuses: frozenset[int] = frozenset()
    retries: model.Retries | None = None
    #: Upstream statuses after which the same backend is tried again.
    retry_statuses: frozenset[int] = frozenset()
    #: Either kind: a response with one of these is held back while it may be replaced.
    held_statuses: frozenset[int] = frozenset()
    #: The route's own, when it retries.
    budget: RetryBudget | None = None
    shadow: CompiledShadow | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def backend_names(self) -> set[str]:
        """Every backend that may answer on this route: its split and its fallback."""
        names = {backend.name for backend, _ in self.backends}
        if self.fallback is not None:
            names.add(self.fallback.name)
        return names

    def condition_failure(self, method: str, host: str | None, headers: RawHeaders) -> str | None:
        """Why the route's conditions reject a request, or None when they accept it."""
        if self.methods is not None and method not in self.methods:
            return f"method {method} is not one of {', '.join(sorted(self.methods))}"
        if self.host is not None and (host is None or not host_matches(self.host, host)):
            return f"host {host or '(none)'} does not match {self.host}"
        for name, value in self.headers:
            if not any(n == name and v == value for n, v in headers):
                return f"header {name.decode()}: {value.decode()} is not present"
        return None


@dataclass(slots=True)
class Decision:
    route: CompiledRoute
    captures: dict[str, str] | None
    #: Why the route was not taken (None for the winner, or for a route never considered).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Router:
    #: Most specific first.
    routes: tuple[CompiledRoute, ...]

    def match(
        self, method: str, segments: tuple[str, ...], host: str | None, headers: RawHeaders
    ) -> tuple[CompiledRoute, dict[str, str]] | None:
        for route in self.routes:
            captures = route.pattern.match(segments)
            if captures is None:
                continue
            if route.methods is not None and method not in route.methods:
                continue
            if (route.host is not None or route.headers) and route.condition_failure(
                method, host, headers
            ) is not None:
                continue
            return route, captures
        return None

    def explain(
        self, method: str, segments: tuple[str, ...], host: str | None, headers: RawHeaders
    ) -> list[Decision]:
        """Every route in precedence order with the reason it was or was not chosen; the
        winner, if any, is the first with ``reason`` None and captures set."""
        decisions: list[Decision] = []
        won = False
        for route in self.routes:
            captures = route.pattern.match(segments)
            if captures is None:
                decisions.append(Decision(route, None, "path does not match"))
                continue
            failure = route.condition_failure(method, host, headers)
            if failure is not None:
                decisions.append(Decision(route, captures, failure))
            elif won:
                decisions.append(
                    Decision(route, captures, "matches, but a more specific route comes first")
                )
            else:
                decisions.append(Decision(route, captures))
                won = True
        return decisions


@dataclass(frozen=True, slots=True)
class CompiledTable:
    model: model.Table
    router: Router
    backends: Mapping[str, Backend]
    #: Request fields some route matches or sticks on: a Connection option may not remove
    #: them from what the backend receives (proxy.headers.NEVER_NOMINATED says why).
    routed_headers: frozenset[bytes] = frozenset()
    loaded_at: float = field(default_factory=time.time)
    #: Requests still running on this table; a reload closes the backends it dropped once
    #: the old table's last request has finished.
    usage: Usage = field(default_factory=lambda: Usage())

    @property
    def version(self) -> str:
        return self.model.digest


def compile_table(
    table: model.Table, make_backend: BackendFactory, metrics: Metrics
) -> CompiledTable:
    """Build backends and routes, binding each route's metric children; a backend that cannot
    be built is a :class:`TableError`, raised before any metric is touched."""
    problems: list[Problem] = []
    backends: dict[str, Backend] = {}
    for name, spec in table.backends.items():
        try:
            backends[name] = make_backend(spec)
        except ValueError as exc:
            problems.append(Problem(spec.location, f"backends.{name}: {exc}"))
    if problems:
        raise TableError(problems)
    routes = [_compile_route(route, backends, metrics) for route in table.routes]
    routes.sort(key=lambda r: r.precedence)
    routed: set[bytes] = set()
    for route in routes:
        routed.update(name for name, _ in route.headers)
        if route.sticky is not None:
            routed.add(route.sticky.header or b"cookie")
    return CompiledTable(
        table, Router(tuple(routes)), MappingProxyType(backends), frozenset(routed)
    )


def _compile_route(
    route: model.Route, backends: dict[str, Backend], metrics: Metrics
) -> CompiledRoute:
    match = route.match
    pattern = compile_pattern(match.path)
    conditions = (match.methods is not None) + (match.host is not None) + len(match.headers)
    weighted = tuple((backends[name], weight) for name, weight in route.split)
    fallback = backends[route.fallback] if route.fallback is not None else None
    # The fallback answers requests too, so it has its metric children even at weight 0.
    bound = [(b.name, b.kind.value, w) for b, w in weighted]
    if fallback is not None and all(b is not fallback for b, _ in weighted):
        bound.append((fallback.name, fallback.kind.value, 0))
    methods = sorted(match.methods) if match.methods is not None else []
    method_key = methods[0] if len(methods) == 1 else "ANY"
    route_metrics = metrics.bind_route(route.name, bound)
    fallback_statuses = route.fallback_statuses if fallback is not None else frozenset[int]()
    retry_statuses = route.retries.statuses if route.retries is not None else frozenset[int]()
    shadow = None
    if route.shadow is not None:
        shadow = CompiledShadow(
            route.shadow,
            backends[route.shadow.backend],
            PathPatterns(route.shadow.ignore),
            route_metrics.bind_shadow(route.shadow.backend, RESULTS),
        )
    else:
        route_metrics.bind_shadow(None, ())
    return CompiledRoute(
        spec=route,
        pattern=pattern,
        methods=match.methods,
        host=match.host,
        headers=tuple((n.encode("latin-1"), v.encode("utf-8")) for n, v in match.headers),
        backends=weighted,
        split=Split(
            route.name,
            [Choice(b, w, b.kind is model.Kind.NEW) for b, w in weighted],
        ),
        sticky=_sticky_rule(route.sticky),
        precedence=(pattern.rank, -conditions, route.index),
        route_key=f"{method_key} {match.path}",
        metrics=route_metrics,
        fallback=fallback,
        fallback_statuses=fallback_statuses,
        retries=route.retries,
        retry_statuses=retry_statuses,
        held_statuses=fallback_statuses | retry_statuses,
        budget=(
            RetryBudget(route.retries.budget_ratio, route.retries.budget_min_per_second)
            if route.retries is not None
            else None
        ),
        shadow=shadow,
    )


def _sticky_rule(sticky: model.Sticky | None) -> StickyRule | None:
    if sticky is None:
        return None
    return StickyRule(
        cookie=sticky.cookie.encode("latin-1") if sticky.cookie is not None else None,
        header=sticky.header.encode("latin-1") if sticky.header is not None else None,
        set_cookie=sticky.set_cookie,
    )
