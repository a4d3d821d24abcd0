"""The gateway's view of its table's rollouts (docs/rollout.md, "What the gateway shows"): per
route with a ``rollout``, its steps, ``to``'s weight in the table and its step, and what the
controller last decided and why, read from the state file beside the table when there is
one. The gateway never decides anything here; the controller (proxy/rollout/) does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.rollout.state import load_state, state_path
from proxy.routes import CompiledTable
from proxy.timefmt import iso_time


def rollouts_report(table: CompiledTable) -> dict[str, Any]:
    """``GET /rollouts``: every route with a rollout, in the table's order."""
    state_file = state_path(table.model.source)
    if not any(route.rollout is not None for route in table.model.routes):
        return {"state_file": None, "state_error": None, "routes": []}
    problem = None
    try:
        state = load_state(Path(state_file))
    except ValueError as exc:
        state, problem = None, str(exc)
    routes = []
    for route in table.model.routes:
        rollout = route.rollout
        if rollout is None:
            continue
        weight = dict(route.split)[rollout.to]
        kept = state.routes.get(route.name) if state is not None else None
        known = kept is not None and kept.weight == weight
        last = kept.decisions[-1] if kept is not None and kept.decisions else None
        routes.append(
            {
                "route": route.name,
                "to": rollout.to,
                "steps": [step / 100 for step in rollout.steps],
                "weight": weight / 100,
                "step": rollout.step_of(weight),
                "since": iso_time(kept.began_at) if known and kept is not None else None,
                "rolled_back": bool(kept is not None and kept.rolled_back and weight == 0),
                "last_decision": None
                if last is None
                else {
                    "at": iso_time(last["at"]),
                    "action": last["action"],
                    "reason": last["reason"],
                    "from": last["from"],
                    "to": last["to"],
                },
            }
        )
    return {
        "state_file": str(state_file) if Path(state_file).exists() else None,
        "state_error": problem,
        "routes": routes,
    }


def format_rollouts(report: dict[str, Any]) -> str:
    """``strangler status``'s rollout lines (nothing when no route has a rollout)."""
    if not report["routes"]:
        return ""
    lines = ["rollout   to          weight  step   since                     last decision"]
    for item in report["routes"]:
        steps = len(item["steps"])
        step = f"{item['step'] + 1}/{steps}" if item["step"] >= 0 else f"-/{steps}"
        last = item["last_decision"]
        said = f"{last['action']}: {last['reason']}" if last else "none yet"
        lines.append(
            f"{item['route']:<9} {item['to']:<11} {item['weight']:>5g}%  {step:<6} "
            f"{item['since'] or '-':<25} {said}"
        )
    return "\n".join(lines)
