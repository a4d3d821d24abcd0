"""The rollout controller with real processes (docs/rollout.md): two `strangler serve`
replicas sharing one table, raw-socket upstreams for the monolith and the new service, and
`strangler rollout` as a subprocess reading both replicas' admin /metrics, or a real Prometheus
scraping them. The controller ramps, rolls back on injected errors, and refuses to run twice;
the gateways reload what it writes and show it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    ROOT,
    Exchange,
    Process,
    RawUpstream,
    prometheus_process,
    response,
    serve_process,
    wait_for,
)

pytestmark = pytest.mark.sockets

STRANGLER = [sys.executable, "-m", "proxy"]

TABLE = """\
version: 1
backends:
  monolith: {{url: "{legacy}", kind: legacy}}
  catalog: {{url: "{new}"}}   # the new catalogue service
routes:
  # The catalogue's ramp; strangler rollout writes the two numbers below.
  - name: catalog
    match: {{ path: /products }}
    split: {{ catalog: 5, monolith: 95 }}
    rollout:
      to: catalog
      steps: [5, 50, 100]
      every: {every}
      min_requests: 5
"""


@dataclass
class NewService:
    failing: bool = False

    async def __call__(self, exchange: Exchange) -> None:
        if self.failing:
            await exchange.send(response("503 Service Unavailable", body=b"down"))
        else:
            await exchange.send(response(body=b"new"))


@dataclass
class Fleet:
    table: Path
    original: str
    new: NewService
    gateways: list[str]
    admins: list[str]
    served: list[str] = field(default_factory=list)

    def send(self, count: int) -> list[bytes]:
        answers = []
        for index in range(count):
            url = self.gateways[index % len(self.gateways)]
            answers.append(httpx.get(f"{url}/products", timeout=10).content)
        return answers

    def rollout(self, *flags: str) -> subprocess.CompletedProcess[str]:
        admins = [arg for admin in self.admins for arg in ("--admin", admin)]
        return subprocess.run(
            [*STRANGLER, "rollout", "-c", str(self.table), *admins, "--once", *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def weights(self, admin: str) -> dict[str, float]:
        routes = httpx.get(f"{admin}/routes", timeout=10).json()["routes"]
        (route,) = [r for r in routes if r["name"] == "catalog"]
        return {b["name"]: b["weight"] for b in route["backends"]}

    def on_every_replica(self, catalog: float) -> bool:
        return all(self.weights(admin)["catalog"] == catalog for admin in self.admins)


def rollout_steps(admin: str) -> dict[str, float]:
    text = httpx.get(f"{admin}/metrics", timeout=10).text
    return {
        s.labels["route"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "strangler_rollout_step"
    }


def decisions(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    legacy = RawUpstream(lambda exchange: exchange.send(response(body=b"legacy"))).start()
    service = NewService()
    new = RawUpstream(service).start()
    table = tmp_path / "routes.yaml"
    text = TABLE.format(legacy=legacy.url, new=new.url, every="1s")
    table.write_text(text)
    processes = [serve_process(table, "--access-log", "off") for _ in range(2)]
    try:
        yield Fleet(table, text, service, [p[1] for p in processes], [p[2] for p in processes])
    finally:
        for process, _, _ in processes:
            process.stop()
        legacy.stop()
        new.stop()


def with_weights(text: str, catalog: str, monolith: str) -> str:
    return text.replace(
        "split: { catalog: 5, monolith: 95 }",
        f"split: {{ catalog: {catalog}, monolith: {monolith} }}",
    )


def test_healthy_traffic_is_ramped_to_100_and_both_replicas_follow(fleet: Fleet) -> None:
    first = fleet.rollout()
    assert first.returncode == 0, first.stderr
    assert [d["action"] for d in decisions(first)] == ["hold"]  # the 5% step begins now
    for catalog, monolith in (("50", "50"), ("100", "0")):
        answers = fleet.send(400)
        assert b"new" in answers
        time.sleep(1.1)
        result = fleet.rollout()
        assert result.returncode == 0, result.stderr
        (decision,) = decisions(result)
        assert decision["action"] == "promote", decision
        # Only the two numbers changed, comments and layout kept.
        assert fleet.table.read_text() == with_weights(fleet.original, catalog, monolith)
        assert wait_for(lambda c=float(catalog): fleet.on_every_replica(c), 10)
    assert [rollout_steps(admin)["catalog"] for admin in fleet.admins] == [2.0, 2.0]
    assert set(fleet.send(20)) == {b"new"}
    assert [d["action"] for d in decisions(fleet.rollout())] == ["complete"]
    report = httpx.get(f"{fleet.admins[0]}/rollouts", timeout=10).json()
    (catalog,) = report["routes"]
    assert (catalog["weight"], catalog["step"], catalog["last_decision"]["action"]) == (
        100.0, 2, "complete",
    )  # fmt: skip
    status = subprocess.run(
        [*STRANGLER, "status", "--admin", fleet.admins[1]],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "catalog   catalog       100%  3/3" in status.stdout


def test_injected_errors_roll_back_and_the_route_stays_at_0(fleet: Fleet) -> None:
    fleet.rollout()
    fleet.send(400)
    time.sleep(1.1)
    assert [d["action"] for d in decisions(fleet.rollout())] == ["promote"]  # to 50%
    assert wait_for(lambda: fleet.on_every_replica(50.0), 10)
    fleet.new.failing = True
    assert b"down" in fleet.send(60)
    time.sleep(1.1)
    result = fleet.rollout()
    (decision,) = decisions(result)
    assert decision["action"] == "rollback"
    assert decision["reason"].startswith("catalog answered 100.00% 5xx")
    assert decision["evidence"]["new_requests"] >= 5
    assert fleet.table.read_text() == with_weights(fleet.original, "0", "100")
    assert wait_for(lambda: fleet.on_every_replica(0.0), 10)
    assert set(fleet.send(40)) == {b"legacy"}
    assert [rollout_steps(admin)["catalog"] for admin in fleet.admins] == [-1.0, -1.0]
    (catalog,) = httpx.get(f"{fleet.admins[1]}/rollouts", timeout=10).json()["routes"]
    assert catalog["rolled_back"] is True
    assert catalog["last_decision"]["action"] == "rollback"
    # Left alone at 0% until a person sets a step again.
    time.sleep(1.1)
    assert decisions(fleet.rollout()) == []
    assert fleet.table.read_text() == with_weights(fleet.original, "0", "100")


def test_a_second_controller_refuses_to_start_and_a_dry_run_writes_nothing(fleet: Fleet) -> None:
    admins = [arg for admin in fleet.admins for arg in ("--admin", admin)]
    # One round now, the next in a minute: nothing it does overlaps what follows.
    running = Process(
        [*STRANGLER, "rollout", "-c", str(fleet.table), *admins, "--interval", "1m"], cwd=ROOT
    )
    try:
        running.wait_for_line(r'"action": "hold"')
        second = fleet.rollout()
        assert second.returncode == 1
        assert f"held by pid {running.proc.pid}" in second.stderr
        fleet.send(400)
        time.sleep(1.1)
        state = fleet.table.with_name("routes.yaml.rollout.json")
        kept = state.read_bytes()
        dry = fleet.rollout("--dry-run")  # takes no lock: it runs beside the controller
        assert dry.returncode == 0, dry.stderr
        (decision,) = decisions(dry)
        assert (decision["action"], decision["dry_run"]) == ("promote", True)
        assert fleet.table.read_text() == fleet.original
        assert state.read_bytes() == kept
    finally:
        assert running.stop() == 0


@pytest.fixture
def prometheus(tmp_path: Path, fleet: Fleet) -> Iterator[str]:
    targets = [admin.split("://")[1] for admin in fleet.admins]
    with prometheus_process(tmp_path, targets) as url:
        assert wait_for(lambda: _up(url, len(targets)), timeout=30), "no scrape"
        yield url


def _up(url: str, targets: int) -> bool:
    try:
        reply = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=2).json()
        result = reply["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) == targets
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def test_a_real_prometheus_scraping_two_replicas_is_the_source(
    fleet: Fleet, prometheus: str
) -> None:
    # At the 50% step, so that the new service's share is plenty in a few seconds.
    fleet.table.write_text(
        with_weights(fleet.original, "50", "50").replace("every: 1s", "every: 4s")
    )
    assert wait_for(lambda: fleet.on_every_replica(50.0), 10)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            fleet.send(10)
            time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        command = [*STRANGLER, "rollout", "-c", str(fleet.table), "--prometheus", prometheus]

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, "--once"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip

        assert [d["action"] for d in decisions(run())] == ["hold"]
        time.sleep(5)
        result = run()
        (decision,) = decisions(result)
        assert decision["action"] == "promote", (decision["reason"], result.stderr)
        # Both replicas' requests, as Prometheus sums them.
        assert decision["evidence"]["new_requests"] >= 5
    finally:
        stop.set()
        worker.join(10)
    assert "catalog: 100, monolith: 0" in fleet.table.read_text()
