"""Typed reading of a composed YAML node tree, collecting every problem with its location.

The loader reads the routing table through this class instead of through Python objects built
by PyYAML, because only the node tree still knows where each value stands in the file, and
because PyYAML silently keeps the last of two duplicate keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from proxy.table.model import Location

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Problem:
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def describe(node: Node) -> str:
    """How a node reads in a message: its type, as a YAML user names it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "an integer",
        _FLOAT: "a number",
        _BOOL: "a boolean",
        _NULL: "null",
    }.get(node.tag, f"a value tagged {node.tag!r}")


class NodeReader:
    """Reads values out of nodes; every bad value adds a :class:`Problem` and yields None."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def location(self, node: Node) -> Location:
        mark = node.start_mark
        return Location(self.source, mark.line + 1, mark.column + 1)

    def error(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.location(node), message))

    def mapping(
        self, node: Node, where: str, allowed: frozenset[str] | None = None
    ) -> dict[str, tuple[Node, Node]] | None:
        """A mapping's entries by key, with their key nodes; unknown keys reported."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{where}: expected a mapping, got {describe(node)}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.error(key_node, f"{where}: YAML merge keys ('<<') are not supported")
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.error(key_node, f"{where}: keys must be strings, got {describe(key_node)}")
                continue
            key = str(key_node.value)
            if key in entries:
                first = self.location(entries[key][0])
                self.error(key_node, f"{where}: duplicate key {key!r} (first at line {first.line})")
                continue
            if allowed is not None and key not in allowed:
                choices = ", ".join(sorted(allowed))
                self.error(key_node, f"{where}: unknown key {key!r} (allowed: {choices})")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def sequence(self, node: Node, where: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{where}: expected a list, got {describe(node)}")
            return None
        return list(node.value)

    def string(self, node: Node, where: str) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag != _STR:
            hint = " (quote it)" if isinstance(node, ScalarNode) and node.tag != _NULL else ""
            self.error(node, f"{where}: expected a string, got {describe(node)}{hint}")
            return None
        return str(node.value)

    def integer(self, node: Node, where: str, minimum: int, maximum: int) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.error(node, f"{where}: expected an integer, got {describe(node)}")
            return None
        if _implicit_tag(node) != _INT:
            # Tagged !!int, but written as no integer YAML knows (!!int abc, !!int 1.5).
            self.error(node, f"{where}: {node.value!r} is not an integer")
            return None
        value = int(yaml.safe_load(node.value))
        if not minimum <= value <= maximum:
            self.error(node, f"{where}: {value} is out of range ({minimum} to {maximum})")
            return None
        return value

    def boolean(self, node: Node, where: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.error(node, f"{where}: expected true or false, got {describe(node)}")
            return None
        if _implicit_tag(node) != _BOOL:
            # Tagged !!bool, but neither true nor false (!!bool abc).
            self.error(node, f"{where}: expected true or false, got {node.value!r}")
            return None
        return node.value.lower() in ("true", "yes", "on")

    def number_text(self, node: Node, where: str) -> str | None:
        """The source text of an integer or decimal number (for exact decimal arithmetic)."""
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
            self.error(node, f"{where}: expected a number, got {describe(node)}")
            return None
        return str(node.value)

    def duration(self, node: Node, where: str, maximum: float, zero: bool = False) -> float | None:
        """A duration such as ``250ms``, ``3s``, ``1m`` or ``1m30s``, in seconds. With
        ``zero``, ``0`` (the one duration written without a unit) or ``0s`` is 0: off."""
        if zero and isinstance(node, ScalarNode) and node.tag == _INT and node.value == "0":
            return 0.0
        off = ", or 0" if zero else ""
        text = self.string(node, where) if _is_str(node) else None
        if text is None:
            if not _is_str(node):
                self.error(
                    node,
                    f"{where}: expected a duration with a unit ('250ms', '3s', "
                    f"'1m'{off}), got {describe(node)}",
                )
            return None
        parts = _DURATION.findall(text)
        if not parts or "".join(value + unit for value, unit in parts) != text:
            self.error(
                node,
                f"{where}: bad duration {text!r} (a number with a unit: ms, s, m "
                f"or h, e.g. '250ms', '3s', '1m30s'{off})",
            )
            return None
        seconds = sum(float(value) * _UNITS[unit] for value, unit in parts)
        if (seconds < 0 if zero else seconds <= 0) or seconds > maximum:
            low = "0 (off)" if zero else "more than 0"
            self.error(
                node,
                f"{where}: duration {text!r} is out of range ({low}, at most {maximum:g}s)",
            )
            return None
        return seconds


def parse_duration(text: str) -> float | None:
    """``250ms``, ``3s``, ``1m30s`` in seconds, as the table writes durations; None if not."""
    parts = _DURATION.findall(text)
    if not parts or "".join(value + unit for value, unit in parts) != text:
        return None
    return sum(float(value) * _UNITS[unit] for value, unit in parts)


def _implicit_tag(node: ScalarNode) -> str:
    """The tag YAML gives the node's text when it is written plain, untagged."""
    # The stubs leave resolve() untyped; it returns the tag as a string.
    return str(Resolver().resolve(ScalarNode, node.value, (True, False)))  # type: ignore[no-untyped-call]


def _is_str(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _STR
