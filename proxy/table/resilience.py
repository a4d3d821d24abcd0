"""Reading the failure-containment keys of a routing table: a route's ``fallback`` and
``retries``, a backend's ``circuit_breaker`` (docs/resilience.md).

Each mapping's keys, defaults and limits are its field table here (``FALLBACK_FIELDS``,
``RETRIES_FIELDS``, ``BUDGET_FIELDS``, ``CIRCUIT_BREAKER_FIELDS``); the loader calls these
readers with its :class:`~proxy.table.yamlnodes.NodeReader`, so problems are reported the same
way. Kept apart from the loader's structure checks.
"""

from __future__ import annotations

from collections.abc import Collection

from yaml.nodes import MappingNode, Node

from proxy.table import fields, values
from proxy.table.fields import Field, Values
from proxy.table.model import RETRY_CONDITIONS, CircuitBreaker, Retries
from proxy.table.yamlnodes import NodeReader

#: Statuses below 500 a fall-through may list: what a new service answers for a page it does
#: not have yet (docs/resilience.md, "Falling through to legacy").
FALL_THROUGH_STATUSES = frozenset({404, 405})
#: A request body kept in memory to send again (to the fallback, or on a retry), in bytes.
DEFAULT_RESEND_BODY = 65536
MAX_RESEND_BODY = 1024 * 1024

#: The longest a breaker's window or open time may be.
MAX_WINDOW = 3600.0


def _statuses(
    reader: NodeReader, where: str, node: Node, field: Field[frozenset[int]]
) -> frozenset[int] | None:
    """A non-empty list of statuses a new service may answer for what it does not serve yet:
    404, 405, and the 5xx statuses (501 among them)."""
    items = reader.sequence(node, where)
    if not items:
        if items is not None:
            reader.error(node, f"{where}: list at least one status, or leave it out")
        return None
    found: set[int] = set()
    ok = True
    for item in items:
        status = reader.integer(item, where, 400, 599)
        if status is not None and status < 500 and status not in FALL_THROUGH_STATUSES:
            reader.error(item, f"{where}: {status} is not one of 404, 405 or 500-599")
            status = None
        if status is None:
            ok = False
        else:
            found.add(status)
    return frozenset(found) if ok else None


def _conditions(
    reader: NodeReader, where: str, node: Node, field: Field[frozenset[str]]
) -> frozenset[str] | None:
    """A list of :data:`~proxy.table.model.RETRY_CONDITIONS` (empty: retry on statuses only)."""
    items = reader.sequence(node, where)
    if items is None:
        return None
    found: set[str] = set()
    ok = True
    for item in items:
        text = reader.string(item, where)
        if text is None:
            ok = False
        elif text not in RETRY_CONDITIONS:
            reader.error(item, f"{where}: {text!r} is not one of {', '.join(RETRY_CONDITIONS)}")
            ok = False
        else:
            found.add(text)
    return frozenset(found) if ok else None


_FALLBACK_BACKEND = Field("backend", fields.string, required=True)
_FALLBACK_STATUSES = Field("statuses", _statuses, default=frozenset[int]())
_FALLBACK_MAX_BODY = Field(
    "max_body", fields.integer, default=DEFAULT_RESEND_BODY, minimum=0, maximum=MAX_RESEND_BODY
)
_FALLBACK_UNSAFE = Field("unsafe_methods", fields.boolean, default=False)
#: ``fallback: {backend: NAME, statuses: [...]}``; ``fallback: NAME`` is the short form.
FALLBACK_FIELDS = (_FALLBACK_BACKEND, _FALLBACK_STATUSES, _FALLBACK_MAX_BODY, _FALLBACK_UNSAFE)

#: Linkerd's defaults: retries add at most a fifth to a backend's load, plus ten a second.
_BUDGET_RATIO = Field("ratio", fields.number, default=0.2, minimum=0, maximum=1)
_BUDGET_MIN_PER_SECOND = Field(
    "min_per_second", fields.number, default=10.0, minimum=0, maximum=1000
)
BUDGET_FIELDS = (_BUDGET_RATIO, _BUDGET_MIN_PER_SECOND)


def _budget(got: Values) -> tuple[float, float]:
    return got[_BUDGET_RATIO], got[_BUDGET_MIN_PER_SECOND]


def _read_budget(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[float, float]]
) -> tuple[float, float] | None:
    got = fields.read(reader, where, node, BUDGET_FIELDS)
    return None if got is None else _budget(got)


_RETRY_ATTEMPTS = Field("attempts", fields.integer, minimum=1, maximum=5, required=True)
# Not `on`: YAML 1.1 reads an unquoted `on` key as the boolean true. By default, failures that
# cannot have been caused by the request itself and that a second connection often does not meet.
_RETRY_ON = Field("retry_on", _conditions, default=frozenset({"connect_failure", "reset"}))
_RETRY_STATUSES = Field("statuses", _statuses, default=frozenset[int]())
#: Left out, the budget is its own table's defaults.
_RETRY_BUDGET = Field("budget", _read_budget, default=_budget(Values.defaults()))
RETRIES_FIELDS = (_RETRY_ATTEMPTS, _RETRY_ON, _RETRY_STATUSES, _RETRY_BUDGET)

#: The model's defaults, which other code constructing a CircuitBreaker relies on too.
_BREAKER = CircuitBreaker()
_FAILURE_RATIO = Field(
    "failure_ratio",
    fields.number,
    default=_BREAKER.failure_ratio,
    minimum=0,
    maximum=1,
    above_minimum=True,
)
_MIN_REQUESTS = Field(
    "min_requests", fields.integer, default=_BREAKER.min_requests, minimum=1, maximum=1_000_000
)
_WINDOW = Field("window", fields.duration, default=_BREAKER.window, maximum=MAX_WINDOW)
_OPEN_FOR = Field("open_for", fields.duration, default=_BREAKER.open_for, maximum=MAX_WINDOW)
_PROBES = Field("probes", fields.integer, default=_BREAKER.probes, minimum=1, maximum=100)
CIRCUIT_BREAKER_FIELDS = (_FAILURE_RATIO, _MIN_REQUESTS, _WINDOW, _OPEN_FOR, _PROBES)


def read_fallback(
    reader: NodeReader, where: str, node: Node, backends: Collection[str]
) -> tuple[str | None, frozenset[int], int, bool]:
    """``fallback`` at ``where``: ``NAME`` or ``{backend: NAME, statuses: [...], max_body: N,
    unsafe_methods: BOOL}``; the backend, its statuses, how large a body is kept to send again,
    and whether other methods than the idempotent ones may fall back."""
    if not isinstance(node, MappingNode):
        name = reader.string(node, where)
        if name is None:
            return None, frozenset(), DEFAULT_RESEND_BODY, False
        reference = values.reference(reader, where, node, name, backends)
        return reference, frozenset(), DEFAULT_RESEND_BODY, False
    got = fields.read(reader, where, node, FALLBACK_FIELDS)
    if got is None:
        return None, frozenset(), DEFAULT_RESEND_BODY, False
    statuses, max_body, unsafe = (
        got[_FALLBACK_STATUSES],
        got[_FALLBACK_MAX_BODY],
        got[_FALLBACK_UNSAFE],
    )
    name, name_node = got.get(_FALLBACK_BACKEND), got.node(_FALLBACK_BACKEND)
    if name is None or name_node is None:
        return None, statuses, max_body, unsafe
    reference = values.reference(reader, f"{where}.backend", name_node, name, backends)
    return reference, statuses, max_body, unsafe


def read_retries(
    reader: NodeReader, where: str, node: Node, field: Field[Retries]
) -> Retries | None:
    """A route's ``retries`` at ``where``."""
    got = fields.read(reader, where, node, RETRIES_FIELDS)
    if got is None:
        return None
    attempts = got.get(_RETRY_ATTEMPTS)
    if attempts is None:
        return None
    ratio, per_second = got[_RETRY_BUDGET]
    return Retries(attempts, got[_RETRY_ON], got[_RETRY_STATUSES], ratio, per_second)


def read_circuit_breaker(
    reader: NodeReader, where: str, node: Node, field: Field[CircuitBreaker]
) -> CircuitBreaker | None:
    """A backend's ``circuit_breaker`` at ``where``; ``{}`` takes every default."""
    got = fields.read(reader, where, node, CIRCUIT_BREAKER_FIELDS)
    if got is None:
        return None
    return CircuitBreaker(
        failure_ratio=got[_FAILURE_RATIO],
        min_requests=got[_MIN_REQUESTS],
        window=got[_WINDOW],
        open_for=got[_OPEN_FOR],
        probes=got[_PROBES],
    )
