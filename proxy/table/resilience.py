"""Reading the failure-containment keys of a routing table: a route's ``fallback`` and
``retries``, a backend's ``circuit_breaker`` (CONTRACT §2.5, docs/resilience.md).

Kept apart from the loader's structure checks; called by it with the same
:class:`~proxy.table.yamlnodes.NodeReader`, so problems are reported the same way.
"""

from __future__ import annotations

from collections.abc import Collection

from yaml.nodes import MappingNode, Node

from proxy.table import values
from proxy.table.model import RETRY_CONDITIONS, CircuitBreaker, Retries
from proxy.table.yamlnodes import NodeReader

MAX_ATTEMPTS = 5
MAX_WINDOW = 3600.0

_FALLBACK_KEYS = frozenset({"backend", "statuses"})
_RETRY_KEYS = frozenset({"attempts", "retry_on", "statuses", "budget"})
_BUDGET_KEYS = frozenset({"ratio", "min_per_second"})
_BREAKER_KEYS = frozenset({"failure_ratio", "min_requests", "window", "open_for", "probes"})

#: What a route retries when ``retry_on`` is left out: failures that cannot have been caused by
#: the request itself and that a second connection often does not meet.
DEFAULT_RETRY_ON = frozenset({"connect_failure", "reset"})
#: Linkerd's defaults: retries add at most a fifth to a backend's load, plus ten a second.
DEFAULT_BUDGET_RATIO = 0.2
DEFAULT_BUDGET_MIN_PER_SECOND = 10.0


def read_fallback(
    reader: NodeReader, where: str, node: Node, backends: Collection[str]
) -> tuple[str | None, frozenset[int]]:
    """``fallback: NAME`` or ``fallback: {backend: NAME, statuses: [...]}``."""
    statuses: frozenset[int] = frozenset()
    name_node = node
    if isinstance(node, MappingNode):
        entries = reader.mapping(node, f"{where}.fallback", _FALLBACK_KEYS)
        if entries is None:
            return None, statuses
        if "backend" not in entries:
            reader.error(node, f"{where}.fallback: missing required key 'backend'")
            return None, statuses
        name_node = entries["backend"][1]
        if "statuses" in entries:
            statuses = _statuses(reader, f"{where}.fallback.statuses", entries["statuses"][1])
        where = f"{where}.fallback.backend"
    else:
        where = f"{where}.fallback"
    return values.backend(reader, where, name_node, backends), statuses


def read_retries(reader: NodeReader, where: str, node: Node) -> Retries | None:
    where = f"{where}.retries"
    entries = reader.mapping(node, where, _RETRY_KEYS)
    if entries is None:
        return None
    attempts = None
    if "attempts" not in entries:
        reader.error(node, f"{where}: missing required key 'attempts'")
    else:
        attempts = reader.integer(entries["attempts"][1], f"{where}.attempts", 1, MAX_ATTEMPTS)
    # Not `on`: YAML 1.1 reads an unquoted `on` key as the boolean true.
    on = DEFAULT_RETRY_ON
    if "retry_on" in entries:
        on = _conditions(reader, f"{where}.retry_on", entries["retry_on"][1])
    statuses: frozenset[int] = frozenset()
    if "statuses" in entries:
        statuses = _statuses(reader, f"{where}.statuses", entries["statuses"][1])
    ratio, per_second = DEFAULT_BUDGET_RATIO, DEFAULT_BUDGET_MIN_PER_SECOND
    if "budget" in entries:
        budget = reader.mapping(entries["budget"][1], f"{where}.budget", _BUDGET_KEYS) or {}
        if "ratio" in budget:
            ratio = _number(reader, f"{where}.budget.ratio", budget["ratio"][1], 0, 1) or 0.0
        if "min_per_second" in budget:
            per_second = (
                _number(
                    reader, f"{where}.budget.min_per_second", budget["min_per_second"][1], 0, 1000
                )
                or 0.0
            )
    if attempts is None:
        return None
    return Retries(attempts, on, statuses, ratio, per_second)


def read_circuit_breaker(reader: NodeReader, where: str, node: Node) -> CircuitBreaker | None:
    where = f"{where}.circuit_breaker"
    entries = reader.mapping(node, where, _BREAKER_KEYS)
    if entries is None:
        return None
    defaults = CircuitBreaker()
    ratio = defaults.failure_ratio
    if "failure_ratio" in entries:
        value = _number(reader, f"{where}.failure_ratio", entries["failure_ratio"][1], 0, 1)
        if value == 0:
            reader.error(entries["failure_ratio"][1], f"{where}.failure_ratio: must be above 0")
        ratio = value or ratio
    min_requests = defaults.min_requests
    if "min_requests" in entries:
        value_node = entries["min_requests"][1]
        min_requests = (
            reader.integer(value_node, f"{where}.min_requests", 1, 1_000_000) or min_requests
        )
    window = defaults.window
    if "window" in entries:
        window = reader.duration(entries["window"][1], f"{where}.window", MAX_WINDOW) or window
    open_for = defaults.open_for
    if "open_for" in entries:
        open_for = (
            reader.duration(entries["open_for"][1], f"{where}.open_for", MAX_WINDOW) or open_for
        )
    probes = defaults.probes
    if "probes" in entries:
        probes = reader.integer(entries["probes"][1], f"{where}.probes", 1, 100) or probes
    return CircuitBreaker(ratio, min_requests, window, open_for, probes)


def _statuses(reader: NodeReader, where: str, node: Node) -> frozenset[int]:
    items = reader.sequence(node, where)
    if not items:
        if items is not None:
            reader.error(node, f"{where}: list at least one status, or leave it out")
        return frozenset()
    found: set[int] = set()
    for item in items:
        status = reader.integer(item, where, 500, 599)
        if status is not None:
            found.add(status)
    return frozenset(found)


def _conditions(reader: NodeReader, where: str, node: Node) -> frozenset[str]:
    items = reader.sequence(node, where)
    if items is None:
        return DEFAULT_RETRY_ON
    found: set[str] = set()
    for item in items:
        text = reader.string(item, where)
        if text is None:
            continue
        if text not in RETRY_CONDITIONS:
            reader.error(item, f"{where}: {text!r} is not one of {', '.join(RETRY_CONDITIONS)}")
        else:
            found.add(text)
    return frozenset(found)


def _number(
    reader: NodeReader, where: str, node: Node, minimum: float, maximum: float
) -> float | None:
    text = reader.number_text(node, where)
    if text is None:
        return None
    value = float(text.replace("_", ""))
    if not minimum <= value <= maximum:
        reader.error(node, f"{where}: {text} is out of range ({minimum:g} to {maximum:g})")
        return None
    return value
