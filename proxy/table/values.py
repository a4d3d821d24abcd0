"""Value readers shared by every part of the routing table: a percentage, a list of methods, a
reference to a backend. One reader per kind of value, so a weight in a ``split`` and a shadow's
``percent`` (or a route's ``backend`` and a fallback's) are checked and reported alike. Each
returns None, after reporting, for a value that is not acceptable."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from decimal import Decimal, InvalidOperation

from yaml.nodes import Node

from proxy.table.yamlnodes import NodeReader

TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: A backend's or a route's name (also a label value of their metrics).
NAME = re.compile(r"[a-z0-9_-]{1,63}\Z")


def named(
    reader: NodeReader, where: str, entries: dict[str, tuple[Node, Node]]
) -> Iterator[tuple[str, Node]]:
    """A mapping's (name, value node) whose keys are valid names (the others reported): the
    entries of ``backends`` and ``authorizers``."""
    for name, (key_node, value_node) in entries.items():
        if not NAME.match(name):
            reader.error(key_node, f"{where}: bad name {name!r} (1-63 of a-z, 0-9, '_', '-')")
            continue
        yield name, value_node


def percentage(reader: NodeReader, where: str, node: Node) -> int | None:
    """0 to 100 with at most 2 decimals, in basis points."""
    text = reader.number_text(node, where)
    if text is None:
        return None
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        reader.error(node, f"{where}: {text!r} is not a percentage")
        return None
    if not value.is_finite() or not 0 <= value <= 100:
        reader.error(node, f"{where}: {text} is out of range (0 to 100)")
        return None
    basis_points = value * 100
    if basis_points != basis_points.to_integral_value():
        reader.error(node, f"{where}: {text} has more than 2 decimals")
        return None
    return int(basis_points)


def methods(reader: NodeReader, where: str, node: Node) -> frozenset[str] | None:
    """A non-empty list of HTTP method names, which are case-sensitive."""
    items = reader.sequence(node, where)
    if items is None:
        return None
    ok = bool(items)
    if not items:
        reader.error(node, f"{where}: list at least one method, or leave it out")
    found: set[str] = set()
    for item in items:
        method = reader.string(item, where)
        if method is None:
            ok = False
        elif not TOKEN.match(method):
            reader.error(item, f"{where}: {method!r} is not a method name")
            ok = False
        elif method != method.upper():
            reader.error(
                item, f"{where}: methods are case-sensitive; did you mean {method.upper()!r}?"
            )
            ok = False
        else:
            found.add(method)
    return frozenset(found) if ok else None


def reference(
    reader: NodeReader, where: str, node: Node, name: str, backends: Collection[str]
) -> str | None:
    """``name``, read from ``node``, if it names a backend the table defines."""
    if name not in backends:
        reader.error(node, f"{where}: unknown backend {name!r}{known(backends)}")
        return None
    return name


def known(backends: Collection[str]) -> str:
    """The backends a message may suggest, when there are any."""
    return f" (known: {', '.join(backends)})" if backends else ""
