"""The declaration of a mapping's keys, and the one way a mapping is read against it.

Every mapping of the routing table (the table itself, a backend, a route, its match, sticky,
fallback, retries, budget, shadow, a circuit breaker) declares its keys once, as a tuple of
:class:`Field`: the key, how its value is read, its default, its limits and whether it is
required. :func:`read` reads a YAML mapping node against such a tuple; unknown keys, missing
required keys and values of the wrong type or out of range are reported through the
:class:`~proxy.table.yamlnodes.NodeReader`, each with its FILE:LINE:COL, and what is left is a
:class:`Values` that answers each field with the value given or, when the key was left out, its
declared default: a value that validated is kept as it is, so a 0 stays 0. This module knows
nothing of the model and must not learn it: the rules that span keys (exactly one of ``url``,
``function``, ``lambda``; ``sticky`` only with a ``split``) and references to backends belong to
the modules that build the model (``loader``, ``resilience``, ``shadowing``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar, cast

from yaml.nodes import Node

from proxy.table import values
from proxy.table.yamlnodes import NodeReader

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Field(Generic[T]):
    """One key of a mapping: everything the loader and the reference file need to know of it."""

    key: str
    #: Reads the value at ``where`` (the key's dotted path, for messages); reports a problem and
    #: returns None when the value is not acceptable. Given the field for its limits.
    read: Callable[[NodeReader, str, Node, Field[T]], T | None]
    #: The value when the key is left out. None: no value (the model says what that means).
    default: T | None = None
    #: Limits of integers, numbers (inclusive) and durations (a duration is more than 0, or
    #: with ``minimum=0`` may be 0 as well, meaning off; its ``maximum`` is required).
    minimum: float | None = None
    maximum: float | None = None
    #: ``minimum`` itself is refused, with a message that says so ("must be above 0").
    above_minimum: bool = False
    required: bool = False


#: A mapping's field table.
Fields = tuple[Field[Any], ...]


class Values:
    """The fields of one mapping as read: each is the value given, else the field's default.

    A value that was given but did not validate reads as the default too: its problem is
    already reported, so the table will be refused and the placeholder never used, and the
    objects built around it still exist (a route naming a backend with a bad timeout is not
    also told that the backend is unknown).
    """

    __slots__ = ("_entries", "_read")

    def __init__(
        self, entries: Mapping[str, tuple[Node, Node]], read: Mapping[str, object]
    ) -> None:
        self._entries = entries
        self._read = read

    @classmethod
    def defaults(cls) -> Values:
        """The values of a mapping that was left out: every field its default."""
        return cls({}, {})

    def __contains__(self, field: Field[Any]) -> bool:
        """Whether the mapping has the key (whatever its value), for rules between keys."""
        return field.key in self._entries

    def get(self, field: Field[T]) -> T | None:
        if field.key in self._read:
            return cast(T, self._read[field.key])
        return field.default

    def __getitem__(self, field: Field[T]) -> T:
        """The value of a field that has a default (so it always has a value)."""
        value = self.get(field)
        if value is None:
            raise LookupError(f"field {field.key!r} has no default; use get()")
        return value

    def key_node(self, field: Field[Any]) -> Node | None:
        """The key's node, where a rule between keys reports that this key does not apply."""
        entry = self._entries.get(field.key)
        return None if entry is None else entry[0]

    def node(self, field: Field[Any]) -> Node | None:
        """The value's node, where a check of a reference reports an unknown backend."""
        entry = self._entries.get(field.key)
        return None if entry is None else entry[1]


def keys(fields: Fields) -> frozenset[str]:
    return frozenset(field.key for field in fields)


def read(
    reader: NodeReader, where: str, node: Node, fields: Fields, prefix: str | None = None
) -> Values | None:
    """Read the mapping at ``node`` against ``fields``; None when it is not a mapping.

    ``where`` names the mapping in its own messages; its keys are named ``prefix + key``,
    ``where.key`` by default.
    """
    entries = reader.mapping(node, where, keys(fields))
    if entries is None:
        return None
    return read_entries(reader, where, node, entries, fields, prefix)


def read_entries(
    reader: NodeReader,
    where: str,
    node: Node,
    entries: Mapping[str, tuple[Node, Node]],
    fields: Fields,
    prefix: str | None = None,
) -> Values:
    """Like :func:`read`, for entries already read from ``node`` (by a caller whose table
    depends on one of them, as a backend's on its target)."""
    if prefix is None:
        prefix = f"{where}."
    found: dict[str, object] = {}
    for field in fields:
        entry = entries.get(field.key)
        if entry is None:
            if field.required:
                reader.error(node, f"{where}: missing required key {field.key!r}")
            continue
        value = field.read(reader, prefix + field.key, entry[1], field)
        if value is not None:
            found[field.key] = value
    return Values(entries, found)


# The readers of the kinds of value a field may hold. Each takes the field for its limits.


def string(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    return reader.string(node, where)


def boolean(reader: NodeReader, where: str, node: Node, field: Field[bool]) -> bool | None:
    return reader.boolean(node, where)


def integer(reader: NodeReader, where: str, node: Node, field: Field[int]) -> int | None:
    minimum, maximum = _limits(field)
    return reader.integer(node, where, int(minimum), int(maximum))


def number(reader: NodeReader, where: str, node: Node, field: Field[float]) -> float | None:
    """An integer or decimal number, such as a ratio."""
    minimum, maximum = _limits(field)
    text = reader.number_text(node, where)
    if text is None:
        return None
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        # YAML also reads 0x10, 1:30 and .inf as numbers; a ratio is written in decimal.
        reader.error(node, f"{where}: {text!r} is not a decimal number")
        return None
    if not (value.is_finite() and minimum <= value <= maximum):
        reader.error(node, f"{where}: {text} is out of range ({minimum:g} to {maximum:g})")
        return None
    if field.above_minimum and value == minimum:
        reader.error(node, f"{where}: must be above {minimum:g}")
        return None
    return float(value)


def duration(reader: NodeReader, where: str, node: Node, field: Field[float]) -> float | None:
    """A duration with a unit, in seconds: more than 0 (or 0 too, written ``0`` or ``0s``, for
    a field with ``minimum=0``), at most ``maximum``."""
    if field.maximum is None:
        raise TypeError(f"field {field.key!r} declares no maximum")
    return reader.duration(node, where, field.maximum, zero=field.minimum == 0)


def percentage(reader: NodeReader, where: str, node: Node, field: Field[int]) -> int | None:
    """0 to 100 with at most 2 decimals, in basis points (the range is the kind's own)."""
    return values.percentage(reader, where, node)


def methods(
    reader: NodeReader, where: str, node: Node, field: Field[frozenset[str]]
) -> frozenset[str] | None:
    return values.methods(reader, where, node)


def node(reader: NodeReader, where: str, node: Node, field: Field[Node]) -> Node:
    """The value's node as it stands, for a value whose rules need more than the value: the
    table's backends (a route's ``backend``, ``split``, ``fallback``, ``shadow``), or the
    whole of the table (``backends``, ``routes``). Its owner reads it after the mapping."""
    return node


def _limits(field: Field[Any]) -> tuple[float, float]:
    # A field table is code: a missing limit is a mistake in it, not in the routing table.
    if field.minimum is None or field.maximum is None:
        raise TypeError(f"field {field.key!r} declares no minimum or maximum")
    return field.minimum, field.maximum
