"""Structural differences between two JSON documents, as JSON paths, and path patterns to
ignore some of them.

Objects compare by key whatever their order; arrays by position; numbers by value (``1`` equals
``1.0``, as JSON does not tell them apart). A path is ``$`` then ``.key`` or ``[index]`` steps;
keys that are not plain names are written ``["key"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
#: Values longer than this are cut in reports.
SHOWN = 200


@dataclass(frozen=True, slots=True)
class Difference:
    path: str
    primary: Any
    shadow: Any

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "primary": _shown(self.primary), "shadow": _shown(self.shadow)}


#: Stands for a key or index present on one side only.
MISSING = object()


def differences(primary: Any, shadow: Any, path: str = "$") -> Iterator[Difference]:
    if isinstance(primary, dict) and isinstance(shadow, dict):
        for key in primary.keys() | shadow.keys():
            yield from differences(
                primary.get(key, MISSING), shadow.get(key, MISSING), _key(path, key)
            )
    elif isinstance(primary, list) and isinstance(shadow, list):
        for index in range(max(len(primary), len(shadow))):
            yield from differences(
                primary[index] if index < len(primary) else MISSING,
                shadow[index] if index < len(shadow) else MISSING,
                f"{path}[{index}]",
            )
    elif not _same(primary, shadow):
        yield Difference(path, primary, shadow)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN.match(key) else f"{path}[{json.dumps(key)}]"


def _shown(value: Any) -> Any:
    if value is MISSING:
        return "(absent)"
    text = json.dumps(value)
    return value if len(text) <= SHOWN else text[:SHOWN] + "…"


def general(path: str) -> str:
    """The path with every array index replaced by ``[*]``: what noise is learnt as, so that a
    field that changes in one list item is ignored in all of them."""
    return re.sub(r"\[\d+\]", "[*]", path)


class PathPatterns:
    """JSON path patterns: ``$.a.b``, ``$.items[*].id``, ``$.*.id``, ``$..updated_at``."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        compiled = [_regex(p) for p in self.patterns]
        self._regex = re.compile("|".join(f"(?:{r})" for r in compiled)) if compiled else None

    def matches(self, path: str) -> bool:
        return self._regex is not None and self._regex.fullmatch(path) is not None


_STEP = re.compile(r"\.\.([^.\[\]*]+)|\.(\*|[^.\[\]*]+)|\[(\*|\d+)\]")
_ANY_STEP = r"(?:\.[^.\[]+|\[[^\]]+\])"


def _regex(pattern: str) -> str:
    """A regular expression for a pattern; a pattern matches a path and everything under it."""
    parts = [r"\$"]
    for descent, key, index in _STEP.findall(pattern[1:]):
        if descent:
            parts.append(f"{_ANY_STEP}*{re.escape('.' + descent)}")
        elif key == "*":
            parts.append(_ANY_STEP)
        elif key:
            parts.append(re.escape(_key("", key)))
        elif index == "*":
            parts.append(r"\[\d+\]")
        else:
            parts.append(re.escape(f"[{index}]"))
    return "".join(parts) + f"{_ANY_STEP}*"
