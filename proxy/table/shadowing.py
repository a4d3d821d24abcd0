"""Reading a route's ``shadow`` key (docs/shadow.md): which backend gets a copy of the route's
requests, how many, which methods, and how its answers are compared. Its keys, defaults and
limits are ``SHADOW_FIELDS``; the shadow's running (``proxy/shadow.py``) is not read here."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from yaml.nodes import Node

from proxy.table import fields, values
from proxy.table.fields import Field
from proxy.table.model import SAFE_METHODS, WEIGHT_SCALE, Shadow
from proxy.table.yamlnodes import NodeReader

#: ``$``, then ``.key``, ``.*``, ``[N]``, ``[*]`` or ``..key`` (any depth), repeated.
_PATH = re.compile(r"\$(\.\.?(\*|[^.\[\]*]+)|\[(\*|\d+)\])*\Z")


def _names(
    pattern: re.Pattern[str], what: str, lower: bool
) -> Callable[[NodeReader, str, Node, Field[tuple[str, ...]]], tuple[str, ...] | None]:
    """A reader of a list of strings that each match ``pattern`` (reported at the list)."""

    def read(
        reader: NodeReader, where: str, node: Node, field: Field[tuple[str, ...]]
    ) -> tuple[str, ...] | None:
        items = reader.sequence(node, where)
        if items is None:
            return None
        found: list[str] = []
        ok = True
        for item in items:
            text = reader.string(item, where)
            if text is None:
                ok = False
            elif not pattern.match(text):
                reader.error(node, f"{where}: {text!r} is not a {what}")
                ok = False
            else:
                found.append(text.lower() if lower else text)
        return tuple(found) if ok else None

    return read


_BACKEND = Field("backend", fields.string, required=True)
_PERCENT = Field("percent", fields.percentage, default=WEIGHT_SCALE)
_METHODS = Field("methods", fields.methods, default=SAFE_METHODS)
_HEADERS: Field[tuple[str, ...]] = Field(
    "headers", _names(values.TOKEN, "header", lower=True), default=("content-type",)
)
_IGNORE: Field[tuple[str, ...]] = Field(
    "ignore", _names(_PATH, "JSON path", lower=False), default=()
)
_LEARN_NOISE = Field("learn_noise", fields.boolean, default=False)
#: 0 compares only empty bodies: every other request or response is dropped as too large.
_MAX_BODY = Field(
    "max_body", fields.integer, default=256 * 1024, minimum=0, maximum=16 * 1024 * 1024
)
_TIMEOUT = Field("timeout", fields.duration, default=10.0, maximum=600.0)
_RECORD_QUERY = Field("record_query", fields.boolean, default=False)
SHADOW_FIELDS = (
    _BACKEND,
    _PERCENT,
    _METHODS,
    _HEADERS,
    _IGNORE,
    _LEARN_NOISE,
    _MAX_BODY,
    _TIMEOUT,
    _RECORD_QUERY,
)


def read_shadow(
    reader: NodeReader, where: str, node: Node, backends: Collection[str]
) -> Shadow | None:
    """A route's ``shadow`` at ``where``; its backend must be one of ``backends``."""
    got = fields.read(reader, where, node, SHADOW_FIELDS)
    if got is None:
        return None
    name, name_node = got.get(_BACKEND), got.node(_BACKEND)
    if name is None or name_node is None:
        return None
    backend = values.reference(reader, f"{where}.backend", name_node, name, backends)
    if backend is None:
        return None
    return Shadow(
        backend=backend,
        percent=got[_PERCENT],
        methods=got[_METHODS],
        headers=got[_HEADERS],
        ignore=got[_IGNORE],
        learn_noise=got[_LEARN_NOISE],
        max_body=got[_MAX_BODY],
        timeout=got[_TIMEOUT],
        record_query=got[_RECORD_QUERY],
    )
