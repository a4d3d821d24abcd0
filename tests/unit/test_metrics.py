"""Metrics (docs/reference.md, "Metrics") and the migration report, in-process: exact
values after known traffic, bounded series whatever the traffic, series removed with their
routes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy import __version__
from proxy.app import Application, create_app
from proxy.metrics import METHODS, Metrics
from proxy.settings import Settings
from proxy.status import format_report

pytestmark = pytest.mark.anyio

TABLE = """\
version: 1
backends:
  monolith: {url: "http://monolith", kind: legacy}
  catalog: {function: "tests.functions:plain_dict"}
  broken: {url: "http://broken"}
routes:
  - {name: everything-else, match: {path: /}, backend: monolith}
  - {name: catalog, match: {path: /products}, split: {catalog: 50, monolith: 50},
     sticky: {header: X-User}}
  - {name: broken, match: {path: /broken}, backend: broken}
  - {name: ready, match: {path: /ready}, split: {catalog: 0, monolith: 100}}
"""


class Streamed(httpx.AsyncByteStream):
    """A body that arrives as a stream, as a real upstream's does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def upstream(request: httpx.Request) -> httpx.Response:
    if request.url.host == "broken":
        raise httpx.ConnectError("refused", request=request)
    status = 404 if request.url.path == "/missing" else 200
    if request.url.path.startswith("/status/"):
        status = int(request.url.path.rsplit("/", 1)[1])
    return httpx.Response(status, stream=Streamed(b"legacy"), headers={"content-length": "6"})


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Application, httpx.AsyncClient]]:
    config = tmp_path / "routes.yaml"
    config.write_text(TABLE)
    application = create_app(
        Settings(config=str(config)),
        transport=httpx.MockTransport(upstream),
        rng=random.Random(3),
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application.public), base_url="http://shop"
    )
    yield application, client
    await client.aclose()
    await application.aclose()


def samples(application: Application, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` in the app's exposition, by their sorted labels."""
    exposition = application.metrics.exposition().decode()
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def test_exact_values_after_known_traffic(
    gateway: tuple[Application, httpx.AsyncClient],
) -> None:
    application, client = gateway
    for _ in range(3):
        await client.get("/")
    await client.post("/missing")
    await client.request("BREW", "/")
    user_on = {}
    for user in ("a", "b", "c", "d", "e", "f"):
        reply = await client.get("/products", headers={"X-User": user})
        user_on[user] = "new" if reply.content.startswith(b"{") else "legacy"
    await client.get("/broken")
    await client.get("/a%2Fb")

    requests = samples(application, "strangler_requests_total")
    route = dict(route="everything-else", backend="monolith", kind="legacy")
    expected = {
        labels(**route, method="GET", code="200"): 3.0,
        labels(**route, method="POST", code="404"): 1.0,
        labels(**route, method="other", code="200"): 1.0,
        labels(route="broken", backend="broken", kind="new", method="GET", code="502"): 1.0,
        labels(route="none", backend="none", kind="none", method="GET", code="400"): 1.0,
    }
    legacy_users = sum(kind == "legacy" for kind in user_on.values())
    if legacy_users:
        expected[
            labels(route="catalog", backend="monolith", kind="legacy", method="GET", code="200")
        ] = float(legacy_users)
    if legacy_users < 6:
        expected[
            labels(route="catalog", backend="catalog", kind="new", method="GET", code="200")
        ] = float(6 - legacy_users)
    assert requests == expected

    errors = samples(application, "strangler_upstream_errors_total")
    assert errors == {labels(route="broken", backend="broken", reason="unavailable"): 1.0}
    counts = samples(application, "strangler_request_duration_seconds_count")
    assert counts[labels(route="everything-else", backend="monolith", kind="legacy")] == 5.0
    assert samples(application, "strangler_requests_in_flight")[labels(route="catalog")] == 0.0
    weights = samples(application, "strangler_route_weight_ratio")
    assert weights == {
        labels(route="everything-else", backend="monolith", kind="legacy"): 1.0,
        labels(route="catalog", backend="catalog", kind="new"): 0.5,
        labels(route="catalog", backend="monolith", kind="legacy"): 0.5,
        labels(route="broken", backend="broken", kind="new"): 1.0,
        labels(route="ready", backend="catalog", kind="new"): 0.0,
        labels(route="ready", backend="monolith", kind="legacy"): 1.0,
    }
    last = samples(application, "strangler_legacy_last_request_timestamp_seconds")
    # Only routes a legacy backend has served have the series.
    assert set(last) <= {labels(route="everything-else"), labels(route="catalog")}
    assert labels(route="everything-else") in last
    assert samples(application, "strangler_config_reloads_total") == {
        labels(result="success"): 1.0,
        labels(result="failure"): 0.0,
    }
    assert samples(application, "strangler_config_last_reload_successful") == {(): 1.0}
    assert samples(application, "strangler_build_info") == {labels(version=__version__): 1.0}
    assert samples(application, "strangler_requests_created") == {}


async def test_series_stay_bounded_whatever_the_paths_and_methods(
    gateway: tuple[Application, httpx.AsyncClient],
) -> None:
    application, client = gateway
    rng = random.Random(11)
    methods = [*METHODS - {"CONNECT"}, "BREW", "PROPFIND", "X-CUSTOM", "get"]
    for _ in range(300):
        path = "/" + "/".join(
            rng.choice(["products", "a", "b%20c", "x" * rng.randint(1, 30), "ready", "%2F", ".."])
            for _ in range(rng.randint(0, 4))
        )
        await client.request(rng.choice(methods), path, headers={"X-User": str(rng.random())})
    requests = samples(application, "strangler_requests_total")
    routes = {"everything-else", "catalog", "broken", "ready", "none"}
    for key in requests:
        values = dict(key)
        assert values["route"] in routes
        assert values["method"] in METHODS | {"other"}
        assert "/" not in "".join(values.values())
    # Routes x their backends x (methods + other) x the codes sent bounds the series.
    assert len(requests) <= 6 * 10 * 4


async def test_statuses_nobody_registered_are_counted_by_class(
    gateway: tuple[Application, httpx.AsyncClient],
) -> None:
    application, client = gateway
    for status in range(200, 600):
        await client.get(f"/status/{status}")
    codes = {
        dict(key)["code"]: value
        for key, value in samples(application, "strangler_requests_total").items()
    }
    # IANA's codes and nginx's 499 keep their own series; every other code shares its class's.
    registered = {str(int(s)) for s in HTTPStatus if 200 <= s < 600} | {"499"}
    assert set(codes) == registered | {"2xx", "3xx", "4xx", "5xx"}
    assert codes["200"] == 1
    assert codes["2xx"] == 100 - len([c for c in registered if c.startswith("2")])
    assert sum(codes.values()) == 400


async def test_the_report_counts_what_each_side_served(
    gateway: tuple[Application, httpx.AsyncClient],
) -> None:
    application, client = gateway
    for _ in range(4):
        await client.get("/")
    for user in range(20):
        await client.get("/products", headers={"X-User": f"u{user}"})
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application.admin), base_url="http://127.0.0.1:9901"
    )
    report = (await admin.get("/migration")).json()
    by_name = {route["name"]: route for route in report["routes"]}
    catalog = by_name["catalog"]
    served = {b["name"]: b["requests"] for b in catalog["backends"]}
    assert served["catalog"] + served["monolith"] == 20
    assert catalog["requests"] == {
        "legacy": served["monolith"],
        "new": served["catalog"],
        "total": 20,
    }
    assert catalog["configured_legacy_share"] == 0.5
    assert catalog["observed_legacy_share"] == served["monolith"] / 20
    assert by_name["ready"]["observed_legacy_share"] is None
    assert by_name["ready"]["legacy_last_request_at"] is None
    assert by_name["everything-else"]["seconds_since_legacy_request"] >= 0
    assert report["totals"]["requests"] == {
        "legacy": 4 + served["monolith"],
        "new": served["catalog"],
        "total": 24,
    }
    assert report["totals"]["routes_fully_new"] == 1  # broken: one new backend
    text = format_report(report)
    assert "catalog          catalog 50% · monolith 50%" in text
    assert "of 24 requests since start" in text
    page = (await admin.get("/")).text
    assert 'data-route="catalog" data-which="configured"' in page
    await admin.aclose()


def test_retire_removes_the_series_of_dropped_routes_and_backends() -> None:
    metrics = Metrics("t")
    kept = metrics.bind_route("kept", [("a", "new", 5000), ("b", "legacy", 5000)])
    gone = metrics.bind_route("gone", [("a", "new", 10_000)])
    kept.backends["b"].count("GET", 200, 0.01)
    kept.backends["a"].error("timeout")
    gone.backends["a"].count("GET", 200, 0.01)
    metrics.bind_route("kept", [("a", "new", 10_000)])
    metrics.retire({"kept": {"a"}})
    text = metrics.exposition().decode()
    assert 'route="gone"' not in text
    assert 'backend="b"' not in text
    assert 'strangler_upstream_errors_total{backend="a",reason="timeout",route="kept"} 1.0' in text
    assert 'strangler_route_weight_ratio{backend="a",kind="new",route="kept"} 1.0' in text


def test_a_tunnel_is_one_101_with_no_duration_and_an_open_count() -> None:
    metrics = Metrics("t")
    route = metrics.bind_route("live", [("ws", "legacy", 10_000)])
    bound = route.backends["ws"]
    assert "strangler_upgraded_connections{" not in metrics.exposition().decode()
    bound.switched("GET")
    bound.switched("GET")
    text = metrics.exposition().decode()
    assert 'strangler_upgraded_connections{backend="ws",route="live"} 2.0' in text
    labels = 'backend="ws",code="101",kind="legacy",method="GET",route="live"'
    assert f"strangler_requests_total{{{labels}}} 2.0" in text
    assert (
        'strangler_request_duration_seconds_count{backend="ws",kind="legacy",route="live"} 0.0'
        in text
    )
    assert route.legacy_last_at is not None
    bound.tunnel_closed()
    bound.tunnel_closed()
    text = metrics.exposition().decode()
    assert 'strangler_upgraded_connections{backend="ws",route="live"} 0.0' in text
    metrics.retire({})
    assert "strangler_upgraded_connections{" not in metrics.exposition().decode()


async def test_a_reload_removes_the_series_of_dropped_routes_and_backends(
    gateway: tuple[Application, httpx.AsyncClient], tmp_path: Path
) -> None:
    application, client = gateway
    await client.get("/broken")
    await client.get("/products", headers={"X-User": "u1"})
    (tmp_path / "routes.yaml").write_text(
        TABLE.replace("  - {name: broken, match: {path: /broken}, backend: broken}\n", "")
        .replace('  broken: {url: "http://broken"}\n', "")
        .replace("split: {catalog: 50, monolith: 50}", "split: {monolith: 100}")
        .replace('  catalog: {function: "tests.functions:plain_dict"}\n', "")
        .replace(", split: {catalog: 0, monolith: 100}", ", backend: monolith")
        .replace("     sticky: {header: X-User}}", "     }")
    )
    result = await application.reloader.reload("test")
    assert result.ok, result.problems
    assert result.changed
    text = application.metrics.exposition().decode()
    assert 'route="broken"' not in text
    assert 'backend="catalog"' not in text
    assert 'strangler_route_weight_ratio{backend="monolith",kind="legacy",route="catalog"} 1.0' in (
        text
    )
    assert samples(application, "strangler_config_reloads_total")[labels(result="success")] == 2.0
