"""The runnable routing table: the model compiled into matchers, splits and backends, and the
one way a request is resolved against it.

:func:`compile_table` is pure: it builds backends (through a factory) and routes, and touches
no live state: no metric, no breaker gauge, no budget. A :class:`CompiledTable` is immutable;
:meth:`CompiledTable.resolve` (normalise, match) and :meth:`CompiledRoute.choose` (the backend,
by the sticky key) are what the gateway, ``strangler explain`` and route tests all call, so the
three decide the same way because they run the same code. Publishing a table for serving (its
metric children, budgets, breaker states) is :mod:`proxy.live`'s.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proxy.asgi import RawHeaders
from proxy.authorizer import Authorizer, backend_spec
from proxy.backends.base import Backend
from proxy.errors import BadRequest, NoRoute
from proxy.headers import cookie_value, header_value
from proxy.hosts import BadHost, Host, host_matches, parse_host
from proxy.jsondiff import PathPatterns
from proxy.matching import BadPath, Pattern, compile_pattern, match_segments, normalise_path
from proxy.rewrite import Rewrite, compile_rewrite
from proxy.splitting import Choice, Split
from proxy.table import model
from proxy.table.loader import TableError
from proxy.table.yamlnodes import Problem

BackendFactory = Callable[[model.Backend], Backend]
HOSTS_KEPT = 1024


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
class CompiledShadow:
    spec: model.Shadow
    backend: Backend
    ignore: PathPatterns


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    spec: model.Route
    #: Its position in the router's order: the index of its runtime state (proxy.live).
    slot: int
    pattern: Pattern
    methods: frozenset[str] | None
    host: str | None
    headers: tuple[tuple[bytes, bytes], ...]
    #: (backend, weight in basis points), in file order, zero weights included.
    backends: tuple[tuple[Backend, int], ...]
    split: Split[Backend]
    sticky: StickyRule | None
    #: API Gateway's route key: ``GET /products/{id}`` when the route has exactly one method,
    #: ``ANY /products/{id}`` otherwise.
    route_key: str
    fallback: Backend | None = None
    #: Upstream statuses after which the fallback answers instead.
    fallback_statuses: frozenset[int] = frozenset()
    retries: model.Retries | None = None
    #: Upstream statuses after which the same backend is tried again.
    retry_statuses: frozenset[int] = frozenset()
    #: Either kind: a response with one of these is held back while it may be replaced.
    held_statuses: frozenset[int] = frozenset()
    shadow: CompiledShadow | None = None
    #: What url backends get as the path instead of the normalised one (proxy/rewrite.py).
    rewrite: Rewrite | None = None
    #: Asked before a backend is chosen (docs/authorizers.md); with ``optional``, a request it
    #: does not allow goes on unauthenticated.
    authorizer: Authorizer | None = None
    optional: bool = False

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

    def choose(self, headers: RawHeaders, rng: random.Random) -> tuple[Backend, str | None]:
        """The backend for a request, and the sticky key minted for it when the route sets a
        cookie and the request brought none (the response must then set it)."""
        sticky = self.sticky
        if sticky is None:
            return self.split.pick(rng), None
        key = sticky.key(headers)
        if key is not None:
            return self.split.pick_for_key(key), None
        if sticky.set_cookie and sticky.cookie is not None:
            key = uuid.uuid4().hex
            return self.split.pick_for_key(key), key
        return self.split.pick(rng), None

    def chosen_for(self, headers: RawHeaders) -> Backend | None:
        """The backend a request certainly gets (one live backend, or a sticky split given its
        key), or None when the choice is random."""
        live = [backend for backend, weight in self.backends if weight > 0]
        if len(live) == 1:
            return live[0]
        key = self.sticky.key(headers) if self.sticky is not None else None
        return self.split.pick_for_key(key) if key is not None else None


@dataclass(slots=True)
class Decision:
    route: CompiledRoute
    captures: dict[str, str] | None
    #: Why the route was not taken (None for the winner, or for a route never considered).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request resolved against the table: its route, captures, normalised path and Host."""

    route: CompiledRoute
    captures: dict[str, str]
    path: str
    host: Host | None


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
    authorizers: Mapping[str, Authorizer] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    #: Host values already normalised (a gateway sees few; the cache stops growing at
    #: HOSTS_KEPT rather than let clients fill it).
    _hosts: dict[bytes, Host] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        return self.model.digest

    def normalise(self, raw_path: bytes, host_value: bytes | None) -> tuple[str, Host | None]:
        """The request's normalised path and Host, or BadRequest (docs/routing.md)."""
        try:
            path = normalise_path(raw_path)
        except BadPath as exc:
            raise BadRequest(f"bad path: {exc}") from None
        if host_value is None:
            return path, None
        host = self._hosts.get(host_value)
        if host is not None:
            return path, host
        try:
            host = parse_host(host_value)
        except BadHost as exc:
            raise BadRequest(f"bad Host: {exc}") from None
        if len(self._hosts) < HOSTS_KEPT:
            self._hosts[host_value] = host
        return path, host

    def resolve(
        self, method: str, raw_path: bytes, host_value: bytes | None, headers: RawHeaders
    ) -> Resolved:
        """The route a request takes, or BadRequest (path or Host refused) or NoRoute."""
        path, host = self.normalise(raw_path, host_value)
        found = self.router.match(
            method, match_segments(path), host.name if host is not None else None, headers
        )
        if found is None:
            raise NoRoute(f"no route matches {method} {path}")
        return Resolved(found[0], found[1], path, host)

    def explain(
        self, method: str, path: str, host: Host | None, headers: RawHeaders
    ) -> list[Decision]:
        """Every route with why it was or was not chosen, for a normalised request."""
        name = host.name if host is not None else None
        return self.router.explain(method, match_segments(path), name, headers)


def compile_table(
    table: model.Table,
    make_backend: BackendFactory,
    previous: Mapping[str, Authorizer] | None = None,
) -> CompiledTable:
    """Build backends, authorizers and routes; one that cannot be built is a
    :class:`TableError`. An authorizer of ``previous`` whose settings are unchanged is kept,
    with its cache. Nothing live is touched: publishing is proxy.live's."""
    problems: list[Problem] = []
    backends: dict[str, Backend] = {}
    for name, spec in table.backends.items():
        try:
            backends[name] = make_backend(spec)
        except ValueError as exc:
            problems.append(Problem(spec.location, f"backends.{name}: {exc}"))
    authorizers: dict[str, Authorizer] = {}
    for name, authorizer in table.authorizers.items():
        kept = (previous or {}).get(name)
        if kept is not None and kept.spec == authorizer:
            authorizers[name] = kept
            continue
        try:
            authorizers[name] = Authorizer(authorizer, make_backend(backend_spec(authorizer)))
        except ValueError as exc:
            problems.append(Problem(authorizer.location, f"authorizers.{name}: {exc}"))
    if problems:
        raise TableError(problems)
    ordered = sorted(table.routes, key=lambda route: _precedence(route))
    routes = tuple(
        _compile_route(route, slot, backends, authorizers) for slot, route in enumerate(ordered)
    )
    routed: set[bytes] = set()
    for route in routes:
        routed.update(name for name, _ in route.headers)
        if route.sticky is not None:
            routed.add(route.sticky.header or b"cookie")
    return CompiledTable(
        table,
        Router(routes),
        MappingProxyType(backends),
        frozenset(routed),
        MappingProxyType(authorizers),
    )


def _precedence(route: model.Route) -> tuple[tuple[int, ...], int, int]:
    """Pattern specificity, then more conditions, then file order."""
    match = route.match
    conditions = (match.methods is not None) + (match.host is not None) + len(match.headers)
    return compile_pattern(match.path).rank, -conditions, route.index


def _compile_route(
    route: model.Route,
    slot: int,
    backends: dict[str, Backend],
    authorizers: dict[str, Authorizer],
) -> CompiledRoute:
    match = route.match
    weighted = tuple((backends[name], weight) for name, weight in route.split)
    fallback = backends[route.fallback] if route.fallback is not None else None
    methods = sorted(match.methods) if match.methods is not None else []
    method_key = methods[0] if len(methods) == 1 else "ANY"
    fallback_statuses = route.fallback_statuses if fallback is not None else frozenset[int]()
    retry_statuses = route.retries.statuses if route.retries is not None else frozenset[int]()
    shadow = None
    if route.shadow is not None:
        shadow = CompiledShadow(
            route.shadow, backends[route.shadow.backend], PathPatterns(route.shadow.ignore)
        )
    pattern = compile_pattern(match.path)
    rewrite = route.rewrite
    return CompiledRoute(
        spec=route,
        slot=slot,
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
        route_key=f"{method_key} {match.path}",
        fallback=fallback,
        fallback_statuses=fallback_statuses,
        retries=route.retries,
        retry_statuses=retry_statuses,
        held_statuses=fallback_statuses | retry_statuses,
        shadow=shadow,
        rewrite=compile_rewrite(pattern, rewrite.prefix, rewrite.path) if rewrite else None,
        authorizer=authorizers[route.authorizer] if route.authorizer is not None else None,
        optional=route.authorizer_optional,
    )


def _sticky_rule(sticky: model.Sticky | None) -> StickyRule | None:
    if sticky is None:
        return None
    return StickyRule(
        cookie=sticky.cookie.encode("latin-1") if sticky.cookie is not None else None,
        header=sticky.header.encode("latin-1") if sticky.header is not None else None,
        set_cookie=sticky.set_cookie,
    )
