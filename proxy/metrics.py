"""The gateway's metrics (docs/reference.md, "Metrics") in the app's own registry, and the
per-route counts the admin API reports.

Label children are bound when a table is compiled, per route and backend; a request only
looks up its (method, code) child in a small per-backend cache and increments. Cardinality is
bounded by the table: route and backend names, ten method values, the status codes actually
sent. Series of routes and backends that a new table drops are removed with it.
"""

from __future__ import annotations

import bisect
import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proxy.table.model import WEIGHT_SCALE, Kind

#: Seconds; from a fast in-process function to a slow monolith page, and long streams.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: The label values of a request that matched no route.
NONE = "none"
#: The status counted for a request whose client went away before any response started
#: (nginx's convention).
CLIENT_CLOSED = 499

#: `strangler_upstream_errors_total` reasons, by the gateway error code that reports them.
ERROR_REASONS = {
    "upstream_unavailable": "unavailable",
    "upstream_timeout": "timeout",
    "function_error": "function_error",
    "bad_function_response": "bad_response",
    "overloaded": "overloaded",
    "circuit_open": "circuit_open",
    "upstream_status": "status",
}
ABORTED = "aborted"
#: `strangler_authorizer_requests_total` results (docs/authorizers.md).
AUTHORIZER_RESULTS = ("allow", "deny", "unauthenticated", "error", "cached")
BREAKER_STATES = ("closed", "open", "half_open")


@contextlib.contextmanager
def _removing() -> Iterator[None]:
    """Removing series: prometheus_client warns that multiprocess mode cannot drop them from
    its files. It still drops them in-process, and :meth:`Metrics.exposition` leaves the
    files' retired series out, so the warning says nothing a user could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Removal of labels", UserWarning)
        yield


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


#: Statuses counted under their own `code`: those IANA registers (and nginx's 499). An upstream
#: may answer with any number from 100 to 599; the others are counted by class, `5xx`, so one
#: backend cannot add hundreds of series.
_REGISTERED = frozenset(int(s) for s in HTTPStatus) | {CLIENT_CLOSED}


def status_label(status: int) -> str:
    return str(status) if status in _REGISTERED else f"{status // 100}xx"


class Metrics:
    """The metric families of one app, registered in a registry of its own."""

    def __init__(self, version: str, multiprocess_dir: str | None = None) -> None:
        #: With ``--workers``: where every worker's values are (Prometheus multiprocess mode).
        self.multiprocess_dir = multiprocess_dir
        # No `_created` series: they double the series count and no dashboard reads them.
        # (The switch is process-wide in prometheus_client; every app here wants it off.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "strangler_requests",
            "Requests answered, by route, backend, kind, method and status.",
            ["route", "backend", "kind", "method", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "strangler_request_duration_seconds",
            "Time from routing a request to the last byte of its response.",
            ["route", "backend", "kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "strangler_requests_in_flight",
            "Requests being answered, by route.",
            ["route"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upgraded = Gauge(
            "strangler_upgraded_connections",
            "Upgraded connections (WebSocket tunnels) open now, by route and backend.",
            ["route", "backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "strangler_upstream_errors",
            "Backend failures, by route, backend and reason.",
            ["route", "backend", "reason"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "strangler_fallbacks",
            "Requests a failing backend left to the route's fallback, by why: a listed "
            "status, an error, an open circuit.",
            ["route", "backend", "fallback", "reason"],
            registry=registry,
        )
        self.shadow = Counter(
            "strangler_shadow_requests",
            "Requests mirrored to a route's shadow backend, by the comparison's result.",
            ["route", "backend", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "strangler_retries",
            "Further attempts at a request on the same backend, by the failure that caused them.",
            ["route", "backend", "reason"],
            registry=registry,
        )
        self.authorizer_requests = Counter(
            "strangler_authorizer_requests",
            "Requests on routes with an authorizer, by its decision: allow, deny, "
            "unauthenticated (no identity: not called), error, cached (answered from its cache).",
            ["authorizer", "result"],
            registry=registry,
        )
        self.authorizer_duration = Histogram(
            "strangler_authorizer_duration_seconds",
            "Time an authorizer took to answer a call (cached answers are not calls).",
            ["authorizer"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rollout_step = Gauge(
            "strangler_rollout_step",
            "The index in its rollout's steps of the route's weight for the backend being "
            "ramped; -1 when it is none of them (0, after a rollback).",
            ["route"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.rollouts: set[str] = set()
        #: Authorizer name -> its bound children.
        self.authorizers: dict[str, AuthorizerMetrics] = {}
        self.telemetry_dropped = Counter(
            "strangler_telemetry_dropped",
            "Access-log lines and spans lost because stdout or the collector did not keep up.",
            ["signal"],
            registry=registry,
        )
        #: (child, how many the source has lost since start, how many were counted).
        self._drop_sources: list[list[Any]] = []
        self.retry_budget_exhausted = Counter(
            "strangler_retry_budget_exhausted",
            "Retries not made because the route's retry budget was spent.",
            ["route"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "strangler_circuit_breaker_state",
            "1 for the state a backend's circuit breaker is in (closed, open, half_open).",
            ["backend", "state"],
            registry=registry,
            # Workers have a breaker each: "open" when any live worker's is.
            multiprocess_mode="livemax",
        )
        #: Backend name -> the breaker whose state the gauge shows (the newest to report).
        self._breakers: dict[str, object] = {}
        self.weight = Gauge(
            "strangler_route_weight_ratio",
            "Configured share of a route's traffic (0 to 1).",
            ["route", "backend", "kind"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.legacy_last = Gauge(
            "strangler_legacy_last_request_timestamp_seconds",
            "When a legacy backend last served the route (Unix time).",
            ["route"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.reloads = Counter(
            "strangler_config_reloads",
            "Routing table reloads, by result.",
            ["result"],
            registry=registry,
        )
        self.last_reload_ok = Gauge(
            "strangler_config_last_reload_successful",
            "1 when the last reload of the routing table succeeded.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.last_reload_success = Gauge(
            "strangler_config_last_reload_success_timestamp_seconds",
            "When the routing table was last loaded successfully (Unix time).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        build = Gauge(
            "strangler_build_info",
            "The running version; always 1.",
            ["version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        build.labels(version).set(1)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        #: Bound per route name; kept across tables while the route exists.
        self.routes: dict[str, RouteMetrics] = {}
        self.unmatched = self.bind_route(NONE, [(NONE, NONE, 0)])

    def bind_route(self, route: str, backends: Iterable[tuple[str, str, int]]) -> RouteMetrics:
        """The route's metrics for (backend, kind, weight in basis points) backends; weights are
        published, counters and observed counts continue from an earlier table."""
        bound = self.routes.get(route)
        if bound is None:
            bound = RouteMetrics(self, route)
            if route != NONE:
                self.routes[route] = bound
        bound.bind(backends)
        return bound

    def bind_authorizers(self, names: Iterable[str]) -> dict[str, AuthorizerMetrics]:
        """The children of the table's authorizers; the series of authorizers it no longer has
        are removed."""
        wanted = set(names)
        with _removing():
            for name in [name for name in self.authorizers if name not in wanted]:
                self.authorizers.pop(name).remove()
        for name in wanted:
            if name not in self.authorizers:
                self.authorizers[name] = AuthorizerMetrics(self, name)
        return self.authorizers

    def publish_rollouts(self, steps: dict[str, int]) -> None:
        """``strangler_rollout_step`` of each route with a rollout; the series of routes that
        no longer have one are removed."""
        with _removing():
            for route in self.rollouts - set(steps):
                self.rollout_step.remove(route)
        for route, step in steps.items():
            self.rollout_step.labels(route).set(step)
        self.rollouts = set(steps)

    def table_loaded(self, when: float | None = None) -> None:
        self.reloads.labels("success").inc()
        self.last_reload_ok.set(1)
        self.last_reload_success.set(time.time() if when is None else when)

    def table_rejected(self) -> None:
        self.reloads.labels("failure").inc()
        self.last_reload_ok.set(0)

    def breaker_changed(self, backend: str, owner: object, state: str) -> None:
        """Publish ``owner``'s new state as the backend's."""
        self._breakers[backend] = owner
        for name in BREAKER_STATES:
            self.breaker_state.labels(backend, name).set(1 if name == state else 0)

    def breaker_removed(self, backend: str, owner: object) -> None:
        """Remove the backend's breaker series, unless a newer breaker has taken them over."""
        if self._breakers.get(backend) is owner:
            del self._breakers[backend]
            with _removing():
                for name in BREAKER_STATES:
                    self.breaker_state.remove(backend, name)

    def count_drops(self, signal: str, lost: Callable[[], int]) -> None:
        """Count what ``lost()`` reports lost so far (access-log lines, spans) under
        ``strangler_telemetry_dropped_total{signal}``, read at every flush."""
        child = self.telemetry_dropped.labels(signal)
        self._drop_sources.append([child, lost, 0])

    def flush(self) -> None:
        """Add every tally taken since the last flush to the metric children."""
        for route in self.routes.values():
            route.flush()
        self.unmatched.flush()
        for source in self._drop_sources:
            child, lost, counted = source
            now = lost()
            if now > counted:
                child.inc(now - counted)
                source[2] = now

    def exposition(self) -> bytes:
        """The text exposition: this process's registry, or with workers the sum over every
        worker's files, less the series of routes and backends the live table no longer has
        (files keep what a worker once wrote)."""
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        collector = MultiProcessCollector(None, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(_LiveSeries(self, collector))
        return generate_latest(registry)

    def is_live(self, labels: dict[str, str]) -> bool:
        """Whether a series' route and backend labels name what the live table has."""
        route = labels.get("route")
        backend = labels.get("backend")
        authorizer = labels.get("authorizer")
        if authorizer is not None:
            return authorizer in self.authorizers
        if route is None:
            return backend is None or backend in self._breakers
        if route == NONE:
            return True
        bound = self.routes.get(route)
        return bound is not None and (
            backend is None or backend in bound.backends or backend in bound.shadows
        )

    def observed(self) -> Observed:
        """Requests answered per (route, backend) and when a legacy backend last served each
        route, since start: this process's, or with workers every worker's."""
        if self.multiprocess_dir is None:
            return Observed(
                {
                    (route.name, name): bound.answered
                    for route in self.routes.values()
                    for name, bound in route.backends.items()
                },
                {
                    route.name: route.legacy_last_at
                    for route in self.routes.values()
                    if route.legacy_last_at is not None
                },
            )
        self.flush()
        answered: dict[tuple[str, str], int] = {}
        legacy_last: dict[str, float] = {}
        collector = MultiProcessCollector(None, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for family in collector.collect():  # type: ignore[no-untyped-call]
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "strangler_requests_total":
                    key = (labels["route"], labels["backend"])
                    answered[key] = answered.get(key, 0) + int(sample.value)
                elif sample.name == "strangler_legacy_last_request_timestamp_seconds":
                    legacy_last[labels["route"]] = sample.value
        return Observed(answered, legacy_last)

    def retire(self, keep: dict[str, set[str]]) -> None:
        """Remove every series of routes not in ``keep`` (route -> its backend names), and of
        backends a kept route no longer has."""
        with _removing():
            for name in list(self.routes):
                if name not in keep:
                    self.routes.pop(name).remove_all()
                else:
                    self.routes[name].remove_backends_except(keep[name])


@dataclass(frozen=True, slots=True)
class Observed:
    answered: dict[tuple[str, str], int]
    legacy_last: dict[str, float]

    def count(self, route: str, backend: str) -> int:
        return self.answered.get((route, backend), 0)


class _LiveSeries:
    """A collector that passes on another's families without the series of retired routes and
    backends."""

    def __init__(self, metrics: Metrics, inner: Collector) -> None:
        self._metrics = metrics
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        rollouts = self._metrics.rollouts
        for family in self._inner.collect():
            if family.name == "strangler_rollout_step":
                # A route that lost its rollout keeps its series in the workers' files.
                family.samples = [s for s in family.samples if s.labels["route"] in rollouts]
            else:
                family.samples = [s for s in family.samples if self._metrics.is_live(s.labels)]
            yield family


@dataclass(slots=True)
class BackendMetrics:
    """One (route, backend)'s series. A request is tallied in plain numbers (:meth:`count`);
    :meth:`flush` adds the tallies to the prometheus_client children, before every scrape
    and, with workers, every second: a request pays for a dictionary update, not for locks,
    label lookups and a search through the histogram's buckets."""

    route: RouteMetrics
    name: str
    kind: str
    weight: int
    duration: Any
    #: Requests answered since start, for /migration.
    answered: int = 0
    is_legacy: bool = False
    _counters: dict[tuple[str, int], Any] = field(default_factory=dict)
    _errors: dict[str, Any] = field(default_factory=dict)
    _fallbacks: dict[tuple[str, str], Any] = field(default_factory=dict)
    _retries: dict[str, Any] = field(default_factory=dict)
    #: Not yet flushed: requests by (method, status), and durations by histogram bucket.
    _tally: dict[tuple[str, int], int] = field(default_factory=dict)
    _observed: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    _observed_sum: float = 0.0
    _observations: int = 0
    #: Tunnels open now, and the value the gauge was last set to.
    tunnels: int = 0
    _tunnels_published: int = 0
    _tunnels_child: Any = None

    def count(self, method: str, status: int, elapsed: float) -> None:
        key = (method, status)
        tally = self._tally
        tally[key] = tally.get(key, 0) + 1
        self._observed[bisect.bisect_left(DURATION_BUCKETS, elapsed)] += 1
        self._observed_sum += elapsed
        self._observations += 1
        self.answered += 1
        if self.is_legacy:
            self.route.legacy_last_at = time.time()

    def switched(self, method: str) -> None:
        """A handshake answered 101: counted once, as a request, and not timed (a tunnel's
        life is no request's duration); the tunnel is open until :meth:`tunnel_closed`."""
        key = (method, 101)
        self._tally[key] = self._tally.get(key, 0) + 1
        self.answered += 1
        self.tunnels += 1
        if self._tunnels_child is None:
            # The series exists from the first tunnel on, 0 when none is open.
            self._tunnels_child = self.route.metrics.upgraded.labels(self.route.name, self.name)
        if self.is_legacy:
            self.route.legacy_last_at = time.time()

    def tunnel_closed(self) -> None:
        self.tunnels -= 1

    def flush(self) -> None:
        if self.tunnels != self._tunnels_published and self._tunnels_child is not None:
            self._tunnels_child.set(self.tunnels)
            self._tunnels_published = self.tunnels
        tally = self._tally
        if tally:
            for (method, status), count in tally.items():
                self._child(method, status).inc(count)
            tally.clear()
        if self._observations:
            # The histogram's own buckets (not cumulative: the first bound at or above the
            # value, as Histogram.observe picks it), filled in bulk.
            buckets = self.duration._buckets
            observed = self._observed
            for index, count in enumerate(observed):
                if count:
                    buckets[index].inc(count)
                    observed[index] = 0
            self.duration._sum.inc(self._observed_sum)
            self._observed_sum = 0.0
            self._observations = 0

    def _child(self, method: str, status: int) -> Any:
        child = self._counters.get((method, status))
        if child is None:
            metrics = self.route.metrics
            child = metrics.requests.labels(
                self.route.name, self.name, self.kind, method_label(method), status_label(status)
            )
            self._counters[(method, status)] = child
        return child

    def error(self, reason: str) -> None:
        child = self._errors.get(reason)
        if child is None:
            child = self.route.metrics.upstream_errors.labels(self.route.name, self.name, reason)
            self._errors[reason] = child
        child.inc()

    def fell_back(self, fallback: str, reason: str) -> None:
        key = (fallback, reason)
        child = self._fallbacks.get(key)
        if child is None:
            child = self.route.metrics.fallbacks.labels(
                self.route.name, self.name, fallback, reason
            )
            self._fallbacks[key] = child
        child.inc()

    def retried(self, reason: str) -> None:
        child = self._retries.get(reason)
        if child is None:
            child = self.route.metrics.retries.labels(self.route.name, self.name, reason)
            self._retries[reason] = child
        child.inc()

    def remove(self) -> None:
        metrics, route = self.route.metrics, self.route.name
        for reason in self._retries:
            metrics.retries.remove(route, self.name, reason)
        for fallback, reason in self._fallbacks:
            metrics.fallbacks.remove(route, self.name, fallback, reason)
        for method, status in self._counters:
            label = status_label(status)
            with contextlib.suppress(KeyError):  # statuses of one class share a series
                metrics.requests.remove(route, self.name, self.kind, method_label(method), label)
        for reason in self._errors:
            metrics.upstream_errors.remove(route, self.name, reason)
        metrics.duration.remove(route, self.name, self.kind)
        if self._tunnels_child is not None:
            metrics.upgraded.remove(route, self.name)
            self._tunnels_child = None
        if route != NONE:
            metrics.weight.remove(route, self.name, self.kind)


class AuthorizerMetrics:
    """One authorizer's series: every result's counter (0 until counted) and its latency."""

    __slots__ = ("_metrics", "_results", "duration", "name")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self.name = name
        self._results = {r: metrics.authorizer_requests.labels(name, r) for r in AUTHORIZER_RESULTS}
        self.duration = metrics.authorizer_duration.labels(name)

    def result(self, result: str) -> None:
        self._results[result].inc()

    def observe(self, seconds: float) -> None:
        self.duration.observe(seconds)

    def remove(self) -> None:
        for result in self._results:
            self._metrics.authorizer_requests.remove(self.name, result)
        self._metrics.authorizer_duration.remove(self.name)


class RouteMetrics:
    """One route's bound children and its counts since start."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.metrics = metrics
        self.name = name
        self.in_flight = metrics.in_flight.labels(name)
        #: Requests being answered now (the in-flight gauge is set from it when flushed).
        self.active = 0
        #: When a legacy backend last served the route; the series exists from then on, so a
        #: route the monolith never served has none (rather than a misleading 1970).
        self.legacy_last_at: float | None = None
        self._legacy_published: float | None = None
        self._legacy_last: Any = None
        self._budget_exhausted: Any = None
        self.backends: dict[str, BackendMetrics] = {}
        #: Shadow backend -> result -> counter child.
        self.shadows: dict[str, dict[str, Any]] = {}

    def bind_shadow(self, backend: str | None, results: Iterable[str]) -> dict[str, Any]:
        """The shadow counters of the route's shadow ``backend`` (None: it has none now);
        series of an earlier shadow backend are removed."""
        for old in [name for name in self.shadows if name != backend]:
            with _removing():
                for result in self.shadows.pop(old):
                    self.metrics.shadow.remove(self.name, old, result)
        if backend is None:
            return {}
        children = self.shadows.get(backend)
        if children is None:
            children = {r: self.metrics.shadow.labels(self.name, backend, r) for r in results}
            self.shadows[backend] = children
        return children

    def budget_exhausted(self) -> None:
        if self._budget_exhausted is None:
            self._budget_exhausted = self.metrics.retry_budget_exhausted.labels(self.name)
        self._budget_exhausted.inc()

    def flush(self) -> None:
        for bound in self.backends.values():
            bound.flush()
        self.in_flight.set(self.active)
        served = self.legacy_last_at
        if served is not None and served != self._legacy_published:
            if self._legacy_last is None:
                self._legacy_last = self.metrics.legacy_last.labels(self.name)
            self._legacy_last.set(served)
            self._legacy_published = served

    def bind(self, backends: Iterable[tuple[str, str, int]]) -> None:
        for name, kind, weight in backends:
            bound = self.backends.get(name)
            if bound is not None and bound.kind != kind:
                with _removing():
                    bound.remove()
                bound = None
            if bound is None:
                duration = self.metrics.duration.labels(self.name, name, kind)
                legacy = kind == Kind.LEGACY.value
                bound = BackendMetrics(self, name, kind, weight, duration, is_legacy=legacy)
                self.backends[name] = bound
            bound.weight = weight
            if self.name != NONE:
                self.metrics.weight.labels(self.name, name, kind).set(weight / WEIGHT_SCALE)

    def remove_backends_except(self, names: set[str]) -> None:
        for name in list(self.backends):
            if name not in names:
                self.backends.pop(name).remove()

    def remove_all(self) -> None:
        for bound in self.backends.values():
            bound.remove()
        self.metrics.in_flight.remove(self.name)
        if self._legacy_last is not None:
            self.metrics.legacy_last.remove(self.name)
        if self._budget_exhausted is not None:
            self.metrics.retry_budget_exhausted.remove(self.name)
        self.bind_shadow(None, ())
