"""One round of the rollout controller, and the loop of rounds (docs/rollout.md).

A round: read the table (a table that does not load is left alone: nothing is decided on it),
read the counts, and for each route with a ``rollout``:

1. find its step: ``to``'s weight in the split. A weight the state does not know begins a step
   now (a fresh controller, or a person's edit), with the counts now as its baseline; weight 0
   is no step (not started, or rolled back: left alone until a person sets a step's weight);
2. judge the step (proxy/rollout/judge.py);
3. on ``promote`` or ``rollback``, write the new weights into the table: the file is read again
   and must be the bytes the round judged (else a person is editing it, and the round leaves
   it), edited at the weights' positions, loaded by the loader, and renamed into place.

Every decision is logged as one JSON line with its evidence, and kept in the state file. A
``hold`` is logged when its reason changes, not every round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.rollout.edit import EditError, format_weight, set_weights, write_atomically
from proxy.rollout.judge import COMPLETE, HOLD, PROMOTE, ROLLBACK, Decision, judge, legacy_weights
from proxy.rollout.sources import RouteView, Source, SourceError
from proxy.rollout.state import RouteState, State, save_state
from proxy.table.loader import TableError, digest, parse_table
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
        table: Path,
        state_file: Path,
        state: State,
        source: Source,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = print,
    ) -> None:
        self.table = table
        self.state_file = state_file
        self.state = state
        self.source = source
        self.dry_run = dry_run
        self._clock = clock
        self._say = say

    def round(self) -> list[Outcome]:
        """Decide once for every route with a rollout; what was decided."""
        data = self.table.read_bytes()
        try:
            table = parse_table(data, str(self.table))
        except TableError as exc:
            log.error("%s does not load; no decision this round:\n%s", self.table, exc)
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
                    data = self._act(outcome, route, data) if not self.dry_run else data
        known = {route.name for route in table.routes if route.rollout is not None}
        for gone in set(self.state.routes) - known:
            del self.state.routes[gone]
        if not self.dry_run:
            save_state(self.state_file, self.state)
        return outcomes

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
            and (last["action"], last.get("rule"), last["from"])
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
            self._say(json.dumps({"route": route, "dry_run": self.dry_run, **entry}))
        if decision.action == COMPLETE:
            state.completed = True
        return outcome

    def _act(self, outcome: Outcome, route: Route, judged: bytes) -> bytes:
        """Write the weights of a promote or a rollback; the table's bytes after it."""
        if outcome.action not in (PROMOTE, ROLLBACK):
            return judged
        rollout = route.rollout
        assert rollout is not None
        current = self.table.read_bytes()
        if digest(current) != digest(judged):
            log.warning(
                "%s changed while the round judged it; %s is left for the next round",
                self.table,
                route.name,
            )
            return current
        weights = legacy_weights(dict(route.split), rollout.to, outcome.weight)
        try:
            text, _ = set_weights(current.decode("utf-8"), str(self.table), route.name, weights)
        except (EditError, TableError, UnicodeDecodeError) as exc:
            log.error("route %s: cannot write the new weights: %s", route.name, exc)
            return current
        edited = text.encode("utf-8")
        write_atomically(self.table, edited)
        state = self.state.routes[route.name]
        state.weight = weights[rollout.to]
        state.began_at = self._clock()
        state.baseline = self.source.baseline(
            RouteView(route.name, rollout.to, frozenset(weights) - {rollout.to})
        )
        state.rolled_back = outcome.action == ROLLBACK
        state.decisions[-1]["written"] = True
        log.info(
            "route %s: %s, %s now at %s%%",
            route.name,
            outcome.action,
            rollout.to,
            format_weight(weights[rollout.to]),
        )
        return edited


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
