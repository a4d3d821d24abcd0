"""Reading a route's ``rollout`` key (docs/rollout.md): the backend being ramped, its steps,
how long each lasts at least, and the gates it must pass, checked against the route's split.
The controller that acts on it is proxy/rollout/; nothing here runs."""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import Node

from proxy.table import fields, values
from proxy.table.fields import Field
from proxy.table.model import WEIGHT_SCALE, Backend, Kind, Rollout
from proxy.table.yamlnodes import NodeReader

ON_FAILURE = ("rollback", "hold")
MAX_EVERY = 7 * 24 * 3600.0


def _steps(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[int, ...]]
) -> tuple[int, ...] | None:
    """Percentages in (0, 100], strictly ascending, in basis points."""
    items = reader.sequence(node, where)
    if items is None:
        return None
    if not items:
        reader.error(node, f"{where}: list at least one step")
        return None
    steps: list[int] = []
    for index, item in enumerate(items):
        weight = values.percentage(reader, f"{where}[{index}]", item)
        if weight is None:
            return None
        if weight == 0:
            reader.error(item, f"{where}[{index}]: a step is more than 0")
            return None
        if steps and weight <= steps[-1]:
            reader.error(item, f"{where}[{index}]: steps must ascend")
            return None
        steps.append(weight)
    return tuple(steps)


def _on_failure(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    text = reader.string(node, where)
    if text is not None and text not in ON_FAILURE:
        reader.error(node, f"{where}: {text!r} is not one of {', '.join(ON_FAILURE)}")
        return None
    return text


_TO = Field("to", fields.string, required=True)
_STEPS = Field("steps", _steps, required=True)
_EVERY = Field("every", fields.duration, default=1800.0, maximum=MAX_EVERY)
_MIN_REQUESTS = Field("min_requests", fields.integer, default=100, minimum=0, maximum=10**9)
_MAX_ERROR_RATIO = Field("max_error_ratio", fields.number, default=0.01, minimum=0, maximum=1)
_MAX_ERROR_RATIO_VS_LEGACY = Field(
    "max_error_ratio_vs_legacy", fields.number, default=2.0, minimum=1, maximum=1000
)
_MAX_P99_VS_LEGACY = Field("max_p99_vs_legacy", fields.number, minimum=1, maximum=1000)
_MIN_SHADOW_PARITY = Field("min_shadow_parity", fields.number, minimum=0, maximum=1)
_ON_FAILURE = Field("on_failure", _on_failure, default="rollback")
ROLLOUT_FIELDS = (
    _TO,
    _STEPS,
    _EVERY,
    _MIN_REQUESTS,
    _MAX_ERROR_RATIO,
    _MAX_ERROR_RATIO_VS_LEGACY,
    _MAX_P99_VS_LEGACY,
    _MIN_SHADOW_PARITY,
    _ON_FAILURE,
)


def read_rollout(
    reader: NodeReader,
    where: str,
    node: Node,
    split: tuple[tuple[str, int], ...] | None,
    backends: Mapping[str, Backend],
) -> Rollout | None:
    """The route's ``rollout`` at ``where``; ``split`` is the route's (None: it has none, or
    it is invalid and already reported)."""
    got = fields.read(reader, where, node, ROLLOUT_FIELDS)
    if got is None:
        return None
    to, to_node, steps = got.get(_TO), got.node(_TO), got.get(_STEPS)
    if to is None or to_node is None or steps is None:
        return None
    if split is None:
        return None
    weights = dict(split)
    if len(weights) < 2:
        reader.error(node, f"{where}: a rollout needs a split between `to` and legacy backends")
        return None
    if to not in weights:
        reader.error(to_node, f"{where}.to: {to!r} is not a backend of the route's split")
        return None
    if backends[to].kind is not Kind.NEW:
        reader.error(to_node, f"{where}.to: {to!r} is a legacy backend; ramp a new one")
        return None
    others = [name for name in weights if name != to and backends[name].kind is not Kind.LEGACY]
    if others:
        reader.error(
            node, f"{where}: the rest of the split must be legacy ({', '.join(others)} is new)"
        )
        return None
    if weights[to] != 0 and weights[to] not in steps:
        shown = ", ".join(f"{step / 100:g}" for step in steps)
        reader.error(
            to_node,
            f"{where}.to: {to!r} has {weights[to] / 100:g}% in the split, which is not 0 or one "
            f"of the steps ({shown})",
        )
        return None
    if steps[-1] != WEIGHT_SCALE:
        reader.error(got.node(_STEPS) or node, f"{where}.steps: the last step must be 100")
        return None
    return Rollout(
        to=to,
        steps=steps,
        every=got[_EVERY],
        min_requests=got[_MIN_REQUESTS],
        max_error_ratio=got[_MAX_ERROR_RATIO],
        max_error_ratio_vs_legacy=got[_MAX_ERROR_RATIO_VS_LEGACY],
        max_p99_vs_legacy=got.get(_MAX_P99_VS_LEGACY),
        min_shadow_parity=got.get(_MIN_SHADOW_PARITY),
        on_failure=got[_ON_FAILURE],
    )
