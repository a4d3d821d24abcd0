"""The rollout controller's rounds (proxy/rollout/controller.py) with simulated time and a
stand-in for the metrics: a ramp from 5% to 100%, a rollback, holds, the parity gate, a restart,
a person's edit in the middle of a round, and the table's bytes after every write."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.rollout.controller import Controller
from proxy.rollout.judge import Window
from proxy.rollout.sources import Flat, RouteView, to_window
from proxy.rollout.stores import FileStore

TABLE = """\
version: 1
backends:
  monolith: {url: "http://127.0.0.1:8081", kind: legacy}
  catalog: {url: "http://127.0.0.1:8082"}   # the new catalogue
  next: {url: "http://127.0.0.1:8083"}
routes:
  - name: everything-else
    match: { path: / }
    backend: monolith

  # Ramped by `strangler rollout`; only the two numbers below ever change.
  - name: catalog
    match: { path: /products }
    split:
      catalog: 5      # new
      monolith: 95    # legacy
    SHADOW
    rollout:
      to: catalog
      steps: [5, 25, 50, 100]
      every: 60s
      min_requests: 10
      ON_FAILURE
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Running totals a test adds to, as the admin source keeps them."""

    def __init__(self) -> None:
        self.totals: Flat = {}
        self.on_refresh = lambda: None

    def add(self, **counts: float) -> None:
        for key, value in counts.items():
            self.totals[key] = self.totals.get(key, 0.0) + value

    def restore(self, totals: dict[str, list[float]]) -> None:
        pass

    def refresh(self) -> None:
        self.on_refresh()

    def baseline(self, view: RouteView) -> Flat:
        return dict(self.totals)

    def window(self, view: RouteView, age: float, baseline: Flat) -> Window:
        return to_window({k: v - baseline.get(k, 0.0) for k, v in self.totals.items()})


def setup(
    tmp_path: Path, shadow: bool = False, on_failure: str = "rollback"
) -> tuple[Path, Controller, Source, Clock, list[str]]:
    table = tmp_path / "routes.yaml"
    text = TABLE.replace("SHADOW", "shadow: {backend: catalog}" if shadow else "# no shadow")
    table.write_text(text.replace("ON_FAILURE", f"on_failure: {on_failure}"))
    source, clock, said = Source(), Clock(), []
    store = FileStore(table, tmp_path / "routes.yaml.rollout.json")
    controller = Controller(store, source, clock=clock, say=said.append)
    return table, controller, source, clock, said


def weights_in(table: Path) -> tuple[str, str]:
    lines = table.read_text().splitlines()
    catalog = next(line for line in lines if line.endswith("# new"))
    monolith = next(line for line in lines if line.endswith("# legacy"))
    return catalog.split(":")[1].split("#")[0].strip(), monolith.split(":")[1].split("#")[0].strip()


def expected_text(original: str, catalog: str, monolith: str) -> str:
    return original.replace("catalog: 5      # new", f"catalog: {catalog}      # new").replace(
        "monolith: 95    # legacy", f"monolith: {monolith}    # legacy"
    )


def healthy(source: Source, new: float = 50, legacy: float = 100) -> None:
    source.add(new_requests=new, legacy_requests=legacy, new_errors=0, legacy_errors=1)


def test_healthy_traffic_is_promoted_through_every_step_and_only_the_weights_change(
    tmp_path: Path,
) -> None:
    table, controller, source, clock, said = setup(tmp_path)
    original = table.read_text()
    actions = []
    for _ in range(6):
        outcomes = controller.round()
        actions.append([(o.action, o.before, o.after) for o in outcomes])
        healthy(source)
        clock.now += 61
        if outcomes and outcomes[0].action == "promote":
            catalog, monolith = weights_in(table)
            assert table.read_text() == expected_text(original, catalog, monolith)
    assert actions == [
        [("hold", 5.0, 5.0)],  # the step begins when first seen: 0 s old
        [("promote", 5.0, 25.0)],
        [("promote", 25.0, 50.0)],
        [("promote", 50.0, 100.0)],
        [("complete", 100.0, 100.0)],
        [],  # done: left alone
    ]
    assert table.read_text() == expected_text(original, "100", "0")
    decisions = [json.loads(line) for line in said]
    assert [d["action"] for d in decisions] == ["hold", "promote", "promote", "promote", "complete"]
    assert decisions[1]["evidence"]["new_requests"] == 50.0
    state = json.loads((tmp_path / "routes.yaml.rollout.json").read_text())
    assert [d["action"] for d in state["routes"]["catalog"]["decisions"]] == [
        "hold", "promote", "promote", "promote", "complete",
    ]  # fmt: skip


def test_errors_roll_back_and_the_route_is_left_alone_until_a_person_sets_a_step(
    tmp_path: Path,
) -> None:
    table, controller, source, clock, _ = setup(tmp_path)
    original = table.read_text()
    controller.round()
    clock.now += 61
    healthy(source)
    assert [o.action for o in controller.round()] == ["promote"]  # now 25%
    clock.now += 61
    source.add(new_requests=40, new_errors=10, legacy_requests=100, legacy_errors=1)
    (outcome,) = controller.round()
    assert (outcome.action, outcome.before, outcome.after) == ("rollback", 25.0, 0.0)
    assert outcome.reason == "catalog answered 25.00% 5xx, above max_error_ratio 1.00%"
    assert table.read_text() == expected_text(original, "0", "100")
    for _ in range(3):
        clock.now += 600
        healthy(source)
        assert controller.round() == []
    # A person starts it again at 5%: a new step, judged from then on.
    table.write_text(original)
    assert [o.action for o in controller.round()] == ["hold"]
    clock.now += 61
    healthy(source)
    assert [o.action for o in controller.round()] == ["promote"]


def test_it_holds_before_every_and_on_too_little_traffic_and_says_each_once(
    tmp_path: Path,
) -> None:
    table, controller, source, clock, said = setup(tmp_path)
    original = table.read_text()
    controller.round()
    for _ in range(3):
        clock.now += 15  # within `every`
        source.add(new_requests=1, legacy_requests=20)
        assert [o.action for o in controller.round()] == ["hold"]
    for _ in range(3):
        clock.now += 61
        source.add(new_requests=1, legacy_requests=20)
        (outcome,) = controller.round()
        assert outcome.action == "hold"
    assert outcome.reason == "catalog served 6 requests in the step; 10 are needed"
    assert table.read_text() == original
    # One line per rule, not one per round; the state keeps the latest numbers.
    assert [json.loads(line)["rule"] for line in said] == ["every", "min_requests"]
    kept = json.loads((tmp_path / "routes.yaml.rollout.json").read_text())["routes"]["catalog"][
        "decisions"
    ]
    assert [d["rule"] for d in kept] == ["every", "min_requests"]
    assert kept[-1]["evidence"]["new_requests"] == 6.0


def test_the_parity_gate_holds_without_comparisons_and_rolls_back_below_its_threshold(
    tmp_path: Path,
) -> None:
    table, controller, source, clock, _ = setup(tmp_path, shadow=True)
    table.write_text(
        table.read_text().replace(
            "min_requests: 10", "min_requests: 10\n      min_shadow_parity: 0.99"
        )
    )
    controller.round()
    clock.now += 61
    healthy(source)
    (held,) = controller.round()
    assert (held.action, held.reason) == ("hold", "the shadow has compared nothing in the step yet")
    source.add(shadow_match=90, shadow_mismatch=10)
    clock.now += 1
    (rolled,) = controller.round()
    assert rolled.action == "rollback"
    assert rolled.reason == (
        "the shadow matched 90.00% of 100 comparisons, below min_shadow_parity 99.00%"
    )


def test_on_failure_hold_stays_at_the_step(tmp_path: Path) -> None:
    table, controller, source, clock, _ = setup(tmp_path, on_failure="hold")
    original = table.read_text()
    controller.round()
    clock.now += 61
    source.add(new_requests=40, new_errors=10)
    (outcome,) = controller.round()
    assert outcome.action == "hold"
    assert table.read_text() == original


def test_a_restarted_controller_resumes_the_step_where_it_was(tmp_path: Path) -> None:
    table, controller, source, clock, _ = setup(tmp_path)
    controller.round()  # the 5% step begins
    clock.now += 30
    healthy(source)
    controller.round()
    # Restarted: a new process reads the state file; the step is still 30 s old, not new.
    state = tmp_path / "routes.yaml.rollout.json"
    again = Controller(FileStore(table, state), source, clock=clock, say=print)
    clock.now += 31
    (outcome,) = again.round()
    assert (outcome.action, outcome.after) == ("promote", 25.0)
    assert outcome.evidence["step_age_s"] == 61.0


def test_a_table_edited_during_the_round_is_left_for_the_next(tmp_path: Path) -> None:
    table, controller, source, clock, said = setup(tmp_path)
    controller.round()
    clock.now += 61
    healthy(source)
    edited = table.read_text().replace("# the new catalogue", "# the new catalogue, v2")

    def person_saves() -> None:
        table.write_text(edited)

    source.on_refresh = person_saves  # while the round judges
    (outcome,) = controller.round()
    assert outcome.action == "promote"
    assert table.read_text() == edited  # not overwritten with the judged bytes
    assert json.loads(said[-1])["written"] is False  # and not said to have been
    source.on_refresh = lambda: None
    clock.now += 1
    (outcome,) = controller.round()
    assert outcome.action == "promote"
    assert "catalog: 25      # new" in table.read_text()
    assert "# the new catalogue, v2" in table.read_text()


def test_a_dry_run_writes_nothing_and_plays_the_ramp_forward_in_memory(tmp_path: Path) -> None:
    table, controller, source, clock, said = setup(tmp_path)
    original = table.read_text()
    controller.round()  # a real controller began the step
    state = tmp_path / "routes.yaml.rollout.json"
    kept = state.read_bytes()
    controller.dry_run = True
    steps = []
    for _ in range(2):
        clock.now += 61
        healthy(source)
        (outcome,) = controller.round()
        steps.append((outcome.action, outcome.before, outcome.after))
    assert steps == [("promote", 5.0, 25.0), ("promote", 25.0, 50.0)]
    assert table.read_text() == original
    assert state.read_bytes() == kept
    lines = [json.loads(line) for line in said]
    assert [(d["action"], d["dry_run"], d["written"]) for d in lines] == [
        ("hold", False, True), ("promote", True, False), ("promote", True, False),
    ]  # fmt: skip
