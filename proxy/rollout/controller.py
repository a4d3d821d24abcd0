"""One round of the rollout controller, and the loop of rounds (docs/rollout.md).

A round: read the table (a table that does not load is left alone: nothing is decided on it),
read the counts, and for each route with a ``rollout``:

1. find its step: ``to``'s weight in the split. A weight the state does not know begins a step
   now (a fresh controller, or a person's edit), with the counts now as its baseline; weight 0
   is no step (not started, or rolled back: left alone until a person sets a step's weight);
2. judge the step (proxy/rollout/judge.py);
3. on ``promote`` or ``rollback``, edit the new weights into the table at their positions and
   load the result with the loader. At the round's end the table and the state are written
   together, only if the store is still what the round read (proxy/rollout/stores.py): a
   person's edit in between wins, and the next round judges it.

Every decision is logged as one JSON line with its evidence, and kept in the state file. A
``hold`` is logged when its reason changes, not every round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.rollout.edit import EditError, format_weight, set_weights
from proxy.rollout.judge import COMPLETE, HOLD, PROMOTE, ROLLBACK, Decision, judge, legacy_weights
from proxy.rollout.sources import RouteView, Source, SourceError
from proxy.rollout.state import RouteState, State, parse_state
from proxy.rollout.stores import Store, StoreError
from proxy.table.loader import TableError, parse_table
from proxy.table.model import Route, Table

log = logging.getLogger("strangler.rollout")


@dataclass(frozen=True, slots=True)
class Outcome:
    route: str
    action: str
    reason: str
    #: ``to``'s weight before and after, in percent.
    before: float
    after: float
    evidence: dict[str, Any]
    #: ``to``'s weight after, in basis points.
    weight: int


class Controller:
    def __init__(
        self,
        store: Store,
        source: Source,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.source = source
        self.dry_run = dry_run
        self.state = State()
        self._clock = clock
        self._say = say
        #: A dry run's table and state, played forward in memory from round to round (nothing
        #: is written, so the store would give the first round's again).
        self._dry: tuple[bytes, State] | None = None
        #: This round's decision lines, said once it is known whether they were written.
        self._pending: list[dict[str, Any]] = []

    def round(self) -> list[Outcome]:
        """Decide once for every route with a rollout; what was decided. The table and the
        state are read from the store each round, and written back together, only if the
        store has not changed since (else the round's writes are dropped, and the next round
        judges what is there then)."""
        try:
            snapshot = self.store.read()
            self.state = parse_state(snapshot.state, f"{self.store.name} (rollout state)")
        except (StoreError, ValueError) as exc:
            log.error("no decision this round: %s", exc)
            return []
        data = snapshot.table
        if self.dry_run and self._dry is not None:
            data, self.state = self._dry
        self.source.restore(self.state.totals)
        self._pending = []
        try:
            table = parse_table(data, self.store.name)
        except TableError as exc:
            log.error("%s does not load; no decision this round:\n%s", self.store.name, exc)
            return []
        try:
            self.source.refresh()
        except SourceError as exc:
            log.error("no decision this round: %s", exc)
            return []
        now = self._clock()
        outcomes = []
        for route in table.routes:
            if route.rollout is not None:
                outcome = self._route(table, route, now)
                if outcome is not None:
                    outcomes.append(outcome)
                    data = self._act(outcome, route, data, now)
        known = {route.name for route in table.routes if route.rollout is not None}
        for gone in set(self.state.routes) - known:
            del self.state.routes[gone]
        if self.dry_run:
            self._dry = (data, self.state)
            self._tell(written=False)
            return outcomes
        changed = data if data != snapshot.table else None
        written = False
        try:
            written = self.store.write(snapshot.version, changed, self.state.to_json())
        except (StoreError, OSError) as exc:
            log.error("cannot write this round's decisions: %s", exc)
        if not written:
            log.warning(
                "%s was not written (changed while the round judged it, or failing); the "
                "decisions wait for the next round",
                self.store.name,
            )
        self._tell(written)
        return outcomes

    def _tell(self, written: bool) -> None:
        """Say this round's decisions, each with whether it took effect: a promote or a
        rollback is ``written`` only when its weights reached the store."""
        for line in self._pending:
            edits = line["action"] in (PROMOTE, ROLLBACK)
            line["written"] = written and (line.pop("edited", False) or not edits)
            self._say(json.dumps(line))
            if edits and line["written"]:
                log.info("route %s: %s, %s%% now", line["route"], line["action"], line["to"])

    def _route(self, table: Table, route: Route, now: float) -> Outcome | None:
        rollout = route.rollout
        assert rollout is not None
        split = dict(route.split)
        weight = split[rollout.to]
        view = RouteView(route.name, rollout.to, frozenset(split) - {rollout.to})
        state = self.state.routes.get(route.name)
        if weight == 0:
            # Not started, or rolled back: a person starts it by setting a step's weight.
            if state is not None and not state.rolled_back:
                state.weight, state.began_at = 0, now
            return None
        if state is None or state.weight != weight:
            history = state.decisions if state is not None else []
            state = RouteState(weight, now, self.source.baseline(view), decisions=history)
            self.state.routes[route.name] = state
            log.info("route %s: step %s%% begins", route.name, format_weight(weight))
        if state.completed:
            return None
        window = self.source.window(view, now - state.began_at, state.baseline)
        shadow = route.shadow
        shadowed = shadow is not None and shadow.backend == rollout.to
        decision = judge(rollout, weight, now - state.began_at, window, shadowed)
        return self._record(route.name, state, decision, weight, now)

    def _record(
        self, route: str, state: RouteState, decision: Decision, weight: int, now: float
    ) -> Outcome | None:
        outcome = Outcome(
            route,
            decision.action,
            decision.reason,
            weight / 100,
            decision.weight / 100,
            decision.evidence,
            decision.weight,
        )
        last = state.decisions[-1] if state.decisions else None
        repeated = (
            decision.action == HOLD
            and last is not None
            and (last["action"], last["rule"], last["from"])
            == (HOLD, decision.rule, outcome.before)
        )
        entry = {
            "at": now,
            "action": decision.action,
            "rule": decision.rule,
            "reason": decision.reason,
            "from": outcome.before,
            "to": outcome.after,
            "evidence": decision.evidence,
        }
        if repeated and last is not None:
            last.update(entry)  # the same hold, with this round's numbers
        else:
            state.record(entry)
            self._pending.append({"route": route, "dry_run": self.dry_run, **entry})
        if decision.action == COMPLETE:
            state.completed = True
        return outcome

    def _act(self, outcome: Outcome, route: Route, text: bytes, now: float) -> bytes:
        """The table's bytes with a promote's or a rollback's weights (a new step then begins);
        the same bytes for any other decision."""
        if outcome.action not in (PROMOTE, ROLLBACK):
            return text
        rollout = route.rollout
        assert rollout is not None
        weights = legacy_weights(dict(route.split), rollout.to, outcome.weight)
        try:
            edited, _ = set_weights(text.decode("utf-8"), self.store.name, route.name, weights)
        except (EditError, TableError, UnicodeDecodeError) as exc:
            log.error("route %s: cannot write the new weights: %s", route.name, exc)
            return text
        state = self.state.routes[route.name]
        view = RouteView(route.name, rollout.to, frozenset(weights) - {rollout.to})
        state.weight, state.began_at = weights[rollout.to], now
        state.baseline = self.source.baseline(view)
        state.rolled_back = outcome.action == ROLLBACK
        if self._pending and self._pending[-1]["route"] == route.name:
            self._pending[-1]["edited"] = True
        return edited.encode("utf-8")


def run(controller: Controller, interval: float, once: bool, stop: Callable[[], bool]) -> None:
    """Rounds every ``interval`` seconds until ``stop()`` (or once)."""
    while True:
        controller.round()
        if once:
            return
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            if stop():
                return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
