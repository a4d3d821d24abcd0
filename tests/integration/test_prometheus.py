"""The shipped Prometheus rules and Grafana dashboard against a real Prometheus scraping a real
gateway under known traffic (Debian's `prometheus` package)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support import (
    ROOT,
    RawUpstream,
    answer,
    need,
    prometheus_process,
    response,
    running_gateway,
    wait_for,
)

pytestmark = pytest.mark.sockets

RULES = ROOT / "deploy" / "prometheus" / "strangler.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "strangler.json"
SCHEMA = ROOT.parent / "shared" / "vendor-data" / "grafana" / "dashboard.jsonschema.json"


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = need("promtool")
    folder = ROOT / "deploy" / "prometheus"
    for args in (
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "tests/strangler.rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_the_dashboard_is_valid_against_grafanas_schema() -> None:
    if not SCHEMA.exists():
        # The schema is reference data kept beside the checkout, as CI lays it out.
        message = f"{SCHEMA} is not here"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SCHEMA.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(dashboard), key=str)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "route"}
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles))


@pytest.fixture
def traffic_gateway(tmp_path: Path) -> Iterator[tuple[int, threading.Event]]:
    """A gateway with a legacy route, a new route and a failing new route, under steady
    traffic: each round sends 3 requests to /old, 1 to /new and 1 to /err."""
    upstream = RawUpstream(answer(response(body=b"legacy"))).start()
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{upstream.url}', kind: legacy}}\n"
        "  fn: {function: 'tests.functions:plain_dict'}\n"
        "  broken: {function: 'tests.functions:raises'}\n"
        "routes:\n"
        "  - {name: old, match: {path: /old}, backend: monolith, shadow: {backend: fn}}\n"
        "  - {name: new, match: {path: /new}, backend: fn}\n"
        "  - {name: err, match: {path: /err}, backend: broken}\n"
        "  - {name: ramp, match: {path: /ramp}, split: {fn: 40, monolith: 60},\n"
        "     rollout: {to: fn, steps: [40, 100]}}\n"
    )
    stop = threading.Event()
    with running_gateway(config) as (_, servers):

        def load() -> None:
            with httpx.Client(base_url=servers.url("gateway")) as client:
                while not stop.is_set():
                    for path in ("/old", "/old", "/old", "/new", "/err"):
                        client.get(path)
                    time.sleep(0.02)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            yield servers.port("admin"), stop
        finally:
            stop.set()
            worker.join(10)
    upstream.stop()


@pytest.fixture
def prometheus(tmp_path: Path, traffic_gateway: tuple[int, threading.Event]) -> Iterator[str]:
    admin_port, _ = traffic_gateway
    with prometheus_process(tmp_path, [f"127.0.0.1:{admin_port}"], RULES) as url:
        yield url


def query(url: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def values(url: str, expr: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in query(url, expr)}


def test_recording_rules_and_every_dashboard_panel_have_data(prometheus: str) -> None:
    # Wait until the rules have been evaluated over a few scrapes of steady traffic.
    assert wait_for(
        lambda: (
            len(query(prometheus, "route:strangler_legacy_share:ratio_rate5m")) >= 3
            and len(query(prometheus, "route_kind:strangler_request_duration_seconds:p99_rate5m"))
            >= 3
        ),
        timeout=40,
    )
    time.sleep(3)
    share = values(prometheus, "route:strangler_legacy_share:ratio_rate5m", "route")
    assert share["old"] == 1.0
    assert share["new"] == 0.0  # no legacy series at all on this route: 0, not absent
    assert share["err"] == 0.0
    (overall,) = query(prometheus, "strangler:legacy_share:ratio_rate5m")
    assert 0.5 < float(overall["value"][1]) < 0.7  # 3 legacy of every 5 requests
    errors = query(prometheus, "route_kind:strangler_errors:ratio_rate5m")
    by_route_kind = {
        (s["metric"]["route"], s["metric"]["kind"]): float(s["value"][1]) for s in errors
    }
    assert by_route_kind[("err", "new")] == 1.0
    assert by_route_kind[("new", "new")] == 0.0
    assert by_route_kind[("old", "legacy")] == 0.0
    weights = values(prometheus, 'strangler_route_weight_ratio{route="ramp"}', "backend")
    assert weights == {"fn": 0.4, "monolith": 0.6}
    assert values(prometheus, "strangler_rollout_step", "route") == {"ramp": 0.0}

    dashboard = json.loads(DASHBOARD.read_text())
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$route", ".*").replace("$__rate_interval", "1m")
            assert query(prometheus, expr), f"panel {panel['title']!r}: no data for {expr}"
            checked += 1
    assert checked == sum(len(p["targets"]) for p in dashboard["panels"]) >= 10
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "route")
    metric = variable["query"].split("(", 1)[1].split(",")[0]
    routes = {s["metric"]["route"] for s in query(prometheus, metric)}
    assert routes == {"old", "new", "err", "ramp"}


def test_alerts_load_into_a_real_prometheus(prometheus: str) -> None:
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {rule["name"] for group in rules for rule in group["rules"]}
    assert {
        "StranglerNewBackendErrorsAboveLegacy",
        "StranglerConfigReloadFailing",
        "StranglerLegacyTrafficReturned",
        "StranglerCircuitOpen",
        "StranglerAuthorizerFailing",
        "StranglerRolloutRolledBack",
        "strangler:legacy_share:ratio_rate5m",
        "route:strangler_legacy_share:ratio_rate5m",
    } <= names
    assert all(rule.get("health") != "err" for group in rules for rule in group["rules"])
