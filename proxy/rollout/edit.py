"""Writing new weights into a routing table without touching anything else (docs/rollout.md,
"How the table is written").

The edit is textual: the YAML parser says where each weight of the route's ``split`` stands in
the file (its scalar's start and end), and only those characters are replaced, so comments,
order, flow or block style and every other byte stay as they were. A round-trip YAML
library would re-emit the whole file and change its layout; the positions the loader already
knows are all this needs. The result is validated by the loader itself before it is written,
and written by an atomic rename (the gateways, watching the file, never see half of it).
"""

from __future__ import annotations

import os
import tempfile
from decimal import Decimal
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.table.loader import parse_table, read_yaml
from proxy.table.model import Table


class EditError(Exception):
    """The table cannot be edited as asked (the route or a weight is not where it should be)."""


def format_weight(basis_points: int) -> str:
    """A weight as a person writes it: ``5``, ``12.5``, ``33.33``."""
    return format(Decimal(basis_points) / 100, "f")


def set_weights(text: str, source: str, route: str, weights: dict[str, int]) -> tuple[str, Table]:
    """``text`` with the route's split weights replaced by ``weights`` (basis points by
    backend), and the table it now is (``source`` names it in messages). Raises EditError, or
    the loader's TableError when the result would not load."""
    root = read_yaml(text.encode("utf-8"), source)
    split = _split_node(root, route)
    spans: list[tuple[int, int, str]] = []
    for key, value in split.value:
        name = key.value
        if name not in weights:
            raise EditError(f"route {route!r}: backend {name!r} of the split has no new weight")
        if not isinstance(value, ScalarNode):
            raise EditError(f"route {route!r}: the weight of {name!r} is not a number")
        spans.append((value.start_mark.index, value.end_mark.index, format_weight(weights[name])))
    if {key.value for key, _ in split.value} != set(weights):
        raise EditError(f"route {route!r}: the split does not have these backends")
    edited = text
    for start, end, number in sorted(spans, reverse=True):
        edited = edited[:start] + number + edited[end:]
    return edited, parse_table(edited.encode("utf-8"), source)


def _split_node(root: Node | None, route: str) -> MappingNode:
    routes = _child(root, "routes")
    if not isinstance(routes, SequenceNode):
        raise EditError("the table has no list of routes")
    for item in routes.value:
        name = _child(item, "name")
        if isinstance(name, ScalarNode) and name.value == route:
            split = _child(item, "split")
            if not isinstance(split, MappingNode):
                raise EditError(f"route {route!r} has no split")
            return split
    raise EditError(f"the table has no route {route!r}")


def _child(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for key_node, value in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found: Node = value
            return found
    return None


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` at once: a temporary file beside it, flushed to disk, then
    renamed over it, keeping its permissions."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
