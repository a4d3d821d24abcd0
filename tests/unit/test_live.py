"""Publishing a compiled table for serving (proxy/live.py): route metrics and weights bound,
each circuit breaker's current state shown, retry budgets carried over while a route's
retries are unchanged, dropped routes' series retired; a table that is rejected, or only
compiled, touches no live gauge (the regression: "a reload rejected because of a later
backend resets a live open breaker's state gauge to closed")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.backends import backend_factory
from proxy.backends.adapters import HttpxUpstream, new_client
from proxy.backends.base import Answer, Backend, ProxyRequest
from proxy.backends.guarded import GuardedBackend
from proxy.live import Live, publish
from proxy.metrics import NONE, Metrics
from proxy.reloader import Reloader
from proxy.routes import CompiledTable, compile_table
from proxy.runtime import Runtime
from proxy.shadow import RESULTS
from proxy.table.loader import TableError, parse_table
from proxy.table.model import Backend as BackendSpec

pytestmark = pytest.mark.anyio

Labels = tuple[tuple[str, str], ...]


class FakeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.name, self.kind, self.spec = spec.name, spec.kind, spec

    async def call(self, request: ProxyRequest) -> Answer:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class Builder:
    """A backend factory that, as the reloader does, carries a backend over while its spec is
    unchanged (circuit-breaker backends behind their GuardedBackend)."""

    def __init__(self) -> None:
        self.built: dict[str, Backend] = {}

    def __call__(self, spec: BackendSpec) -> Backend:
        current = self.built.get(spec.name)
        if current is not None and current.spec == spec:
            return current
        backend: Backend = FakeBackend(spec)
        if spec.circuit_breaker is not None:
            backend = GuardedBackend(backend, spec.circuit_breaker)
        self.built[spec.name] = backend
        return backend


BREAKER = "{min_requests: 1, failure_ratio: 0.5, open_for: 30s}"

TABLE = f"""\
version: 1
backends:
  monolith: {{url: "http://monolith", kind: legacy}}
  catalog: {{url: "http://catalog", circuit_breaker: {BREAKER}}}
  spare: {{url: "http://spare", kind: legacy}}
  mirror: {{url: "http://mirror"}}
routes:
  - {{name: everything-else, match: {{path: /}}, backend: monolith}}
  - name: products
    match: {{path: /products}}
    split: {{catalog: 25, monolith: 75}}
    fallback: spare
    retries: {{attempts: 2, budget: {{ratio: 0.5, min_per_second: 1}}}}
    shadow: {{backend: mirror}}
  - name: old
    match: {{path: /old}}
    backend: catalog
    retries: {{attempts: 1}}
"""


def compiled(text: str, make: Builder) -> CompiledTable:
    return compile_table(parse_table(text.encode(), "t.yaml"), make)


def samples(metrics: Metrics, name: str) -> dict[Labels, float]:
    found: dict[Labels, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def breaker_gauge(metrics: Metrics, backend: str) -> dict[str, float]:
    return {
        dict(key)["state"]: value
        for key, value in samples(metrics, "strangler_circuit_breaker_state").items()
        if dict(key)["backend"] == backend
    }


OPEN = {"closed": 0.0, "open": 1.0, "half_open": 0.0}
CLOSED = {"closed": 1.0, "open": 0.0, "half_open": 0.0}


def trip(backend: Backend) -> None:
    """Open a breaker of min_requests 1 with one failure."""
    assert isinstance(backend, GuardedBackend)
    assert backend.breaker.allow()
    backend.breaker.failure()
    assert backend.breaker.state.value == "open"


def test_publish_binds_route_metrics_and_weights() -> None:
    metrics = Metrics("t")
    live = publish(compiled(TABLE, Builder()), metrics)
    products = next(r for r in live.table.router.routes if r.name == "products")
    state = live.state(products)
    assert state.metrics is metrics.routes["products"]
    # The fallback answers too: it has its children at weight 0.
    assert {name: b.weight for name, b in state.metrics.backends.items()} == {
        "catalog": 2500,
        "monolith": 7500,
        "spare": 0,
    }
    assert set(state.shadow_counters) == set(RESULTS)
    assert live.unmatched is metrics.unmatched.backends[NONE]
    assert samples(metrics, "strangler_route_weight_ratio") == {
        labels(route="everything-else", backend="monolith", kind="legacy"): 1.0,
        labels(route="products", backend="catalog", kind="new"): 0.25,
        labels(route="products", backend="monolith", kind="legacy"): 0.75,
        labels(route="products", backend="spare", kind="legacy"): 0.0,
        labels(route="old", backend="catalog", kind="new"): 1.0,
    }
    assert samples(metrics, "strangler_shadow_requests_total") == {
        labels(route="products", backend="mirror", result=result): 0.0 for result in RESULTS
    }
    assert samples(metrics, "strangler_config_reloads_total")[labels(result="success")] == 1.0


def test_state_is_found_by_the_routes_slot() -> None:
    metrics = Metrics("t")
    live = publish(compiled(TABLE, Builder()), metrics)
    assert len(live.routes) == 3
    for compiled_route in live.table.router.routes:
        assert live.state(compiled_route) is live.routes[compiled_route.slot]
        assert live.state(compiled_route).metrics.name == compiled_route.name
    assert [r.name for r in live.table.router.routes] == ["products", "old", "everything-else"]
    assert [live.state(r).budget is None for r in live.table.router.routes] == [False, False, True]


def test_publish_shows_the_breakers_current_state() -> None:
    metrics, make = Metrics("t"), Builder()
    table = compiled(TABLE, make)
    # Opened before it was ever published: publish shows open, not a fresh closed.
    trip(table.backends["catalog"])
    publish(table, metrics)
    assert breaker_gauge(metrics, "catalog") == OPEN


def test_a_second_table_carrying_the_breaker_over_keeps_it_open() -> None:
    metrics, make = Metrics("t"), Builder()
    first = compiled(TABLE, make)
    live = publish(first, metrics)
    assert breaker_gauge(metrics, "catalog") == CLOSED
    trip(first.backends["catalog"])
    assert breaker_gauge(metrics, "catalog") == OPEN  # published: every change shows
    second = compiled(TABLE.replace("catalog: 25, monolith: 75", "catalog: 50, monolith: 50"), make)
    assert second.backends["catalog"] is first.backends["catalog"]
    publish(second, metrics, live)
    assert breaker_gauge(metrics, "catalog") == OPEN


def test_a_table_compiled_but_not_published_leaves_the_live_gauge_alone() -> None:
    metrics, make = Metrics("t"), Builder()
    first = compiled(TABLE, make)
    publish(first, metrics)
    trip(first.backends["catalog"])
    changed = TABLE.replace("open_for: 30s", "open_for: 60s")
    candidate = compiled(changed, make)  # as a reload rejected later would have
    assert candidate.backends["catalog"] is not first.backends["catalog"]
    assert isinstance(candidate.backends["catalog"], GuardedBackend)
    assert candidate.backends["catalog"].breaker.state.value == "closed"
    assert breaker_gauge(metrics, "catalog") == OPEN
    # A table whose later backend cannot be built is never compiled, let alone published.
    make.built.clear()
    make.built.update(first.backends)

    def failing(spec: BackendSpec) -> Backend:
        if spec.name == "mirror":
            raise ValueError("cannot import 'nowhere'")
        return make(spec)

    with pytest.raises(TableError):
        compile_table(parse_table(changed.encode(), "t.yaml"), failing)
    assert breaker_gauge(metrics, "catalog") == OPEN


def test_retry_budgets_are_carried_over_while_retries_are_unchanged() -> None:
    metrics, make = Metrics("t"), Builder()
    first = publish(compiled(TABLE, make), metrics)
    budgets = {r.name: first.state(r).budget for r in first.table.router.routes}
    assert budgets["everything-else"] is None
    products_budget, old_budget = budgets["products"], budgets["old"]
    assert products_budget is not None
    assert old_budget is not None
    assert (products_budget.ratio, products_budget.min_per_second) == (0.5, 1.0)
    assert (old_budget.ratio, old_budget.min_per_second) == (0.2, 10.0)
    products_budget.request()
    assert products_budget.try_retry()

    # A new route first in the order moves every slot; budgets follow the route's name.
    second_text = TABLE.replace(
        "routes:\n",
        "routes:\n  - {name: first, match: {path: '/products/{id}'}, backend: monolith}\n",
    ).replace("retries: {attempts: 1}", "retries: {attempts: 2}")
    second = publish(compiled(second_text, make), metrics, first)
    by_name = {r.name: r for r in second.table.router.routes}
    assert by_name["first"].slot == 0
    carried = second.state(by_name["products"]).budget
    assert carried is products_budget
    assert carried.window() == (1, 1)
    renewed = second.state(by_name["old"]).budget
    assert renewed is not None
    assert renewed is not old_budget
    assert renewed.window() == (0, 0)

    # The budget's own settings count as a change too.
    third = publish(
        compiled(second_text.replace("ratio: 0.5", "ratio: 0.3"), make), metrics, second
    )
    products = next(r for r in third.table.router.routes if r.name == "products")
    budget = third.state(products).budget
    assert budget is not None
    assert budget is not products_budget
    assert budget.ratio == 0.3


def test_retired_routes_and_backends_lose_their_series() -> None:
    metrics, make = Metrics("t"), Builder()
    first = publish(compiled(TABLE, make), metrics)
    old = next(r for r in first.table.router.routes if r.name == "old")
    first.state(old).metrics.backends["catalog"].count("GET", 200, 0.01)
    first.state(old).metrics.backends["catalog"].error("timeout")
    exposition = metrics.exposition().decode()
    assert 'route="old"' in exposition
    dropped = TABLE.split("  - name: old\n")[0].replace(
        "    fallback: spare\n", "    fallback: monolith\n"
    )
    second = publish(compiled(dropped, make), metrics, first)
    exposition = metrics.exposition().decode()
    assert 'route="old"' not in exposition
    assert 'backend="spare"' not in exposition
    assert "old" not in metrics.routes
    assert set(metrics.routes["products"].backends) == {"catalog", "monolith"}
    assert [r.name for r in second.table.router.routes] == ["products", "everything-else"]
    assert samples(metrics, "strangler_config_reloads_total")[labels(result="success")] == 2.0


async def test_a_replaced_breaker_no_longer_reports_once_the_new_one_is_live() -> None:
    metrics, make = Metrics("t"), Builder()
    first = compiled(TABLE, make)
    live = publish(first, metrics)
    old = first.backends["catalog"]
    second = compiled(TABLE.replace("open_for: 30s", "open_for: 60s"), make)
    publish(second, metrics, live)
    assert breaker_gauge(metrics, "catalog") == CLOSED
    # A request still running on the first table fails on the old breaker and opens it ...
    trip(old)
    # ... but the live backend's breaker is closed, and that is what the gauge must show,
    current = second.backends["catalog"]
    assert isinstance(current, GuardedBackend)
    assert current is not old
    assert current.breaker.state.value == "closed"
    assert breaker_gauge(metrics, "catalog") == CLOSED
    # also once the old backend is closed after the first table drained.
    await old.aclose()
    assert breaker_gauge(metrics, "catalog") == CLOSED


# -- through the reloader ------------------------------------------------------------------

RELOAD_TABLE = """\
version: 1
backends:
  monolith: {url: "http://monolith", kind: legacy}
  pay: {url: "http://pay", circuit_breaker: {min_requests: 1, open_for: 30s}}
routes:
  - {name: everything-else, match: {path: /}, backend: monolith}
  - {name: pay, match: {path: /pay}, backend: pay}
"""


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[tuple[Reloader, Runtime, Metrics, Path]]:
    config = tmp_path / "routes.yaml"
    config.write_text(RELOAD_TABLE)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    client = new_client(mock)
    make = backend_factory(client, HttpxUpstream(mock))
    metrics = Metrics("t")
    table = compile_table(parse_table(config.read_bytes(), str(config)), make)
    runtime = Runtime(publish(table, metrics))
    reloader = Reloader(str(config), runtime, metrics, make)
    yield reloader, runtime, metrics, config
    await reloader.aclose()
    await client.aclose()


async def test_a_reload_rejected_for_a_later_backend_leaves_an_open_breaker_open(
    reloading: tuple[Reloader, Runtime, Metrics, Path],
) -> None:
    reloader, runtime, metrics, config = reloading
    live: Live = runtime.live
    trip(live.table.backends["pay"])
    assert breaker_gauge(metrics, "pay") == OPEN
    # The breaker changes (a new GuardedBackend is built for it), then a later backend fails.
    config.write_text(
        RELOAD_TABLE.replace("open_for: 30s", "open_for: 60s").replace(
            "routes:\n", '  broken: {function: "tests.no_such_module:handler"}\nroutes:\n'
        )
    )
    result = await reloader.reload("test")
    assert not result.ok
    assert not result.changed
    assert [p.message for p in result.problems] == [
        "backends.broken: cannot import 'tests.no_such_module': ModuleNotFoundError: "
        "No module named 'tests.no_such_module'"
    ]
    assert runtime.live is live
    assert breaker_gauge(metrics, "pay") == OPEN
    assert samples(metrics, "strangler_config_reloads_total") == {
        labels(result="success"): 1.0,
        labels(result="failure"): 1.0,
    }
    assert samples(metrics, "strangler_config_last_reload_successful") == {(): 0.0}

    # The same change without the broken backend loads: the new breaker, closed, is shown.
    config.write_text(RELOAD_TABLE.replace("open_for: 30s", "open_for: 60s"))
    result = await reloader.reload("test")
    assert result.ok
    assert result.changed
    assert runtime.live.table.backends["pay"] is not live.table.backends["pay"]
    assert breaker_gauge(metrics, "pay") == CLOSED
