"""Reading a route's ``shadow`` key (docs/shadow.md): which backend gets a copy of the route's
requests, how many, which methods, and how its answers are compared."""

from __future__ import annotations

import re
from collections.abc import Collection

from yaml.nodes import Node

from proxy.table import values
from proxy.table.model import SAFE_METHODS, WEIGHT_SCALE, Shadow
from proxy.table.yamlnodes import NodeReader

_KEYS = frozenset(
    {
        "backend",
        "percent",
        "methods",
        "headers",
        "ignore",
        "learn_noise",
        "max_body",
        "timeout",
        "record_query",
    }
)
#: ``$``, then ``.key``, ``.*``, ``[N]``, ``[*]`` or ``..key`` (any depth), repeated.
_PATH = re.compile(r"\$(\.\.?(\*|[^.\[\]*]+)|\[(\*|\d+)\])*\Z")
DEFAULT_HEADERS = ("content-type",)
DEFAULT_MAX_BODY = 256 * 1024
MAX_BODY = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0


def read_shadow(
    reader: NodeReader, where: str, node: Node, backends: Collection[str]
) -> Shadow | None:
    where = f"{where}.shadow"
    entries = reader.mapping(node, where, _KEYS)
    if entries is None:
        return None
    backend = None
    if "backend" not in entries:
        reader.error(node, f"{where}: missing required key 'backend'")
    else:
        backend = values.backend(reader, f"{where}.backend", entries["backend"][1], backends)
    percent = WEIGHT_SCALE
    if "percent" in entries:
        percent = values.percentage(reader, f"{where}.percent", entries["percent"][1]) or 0
    methods = SAFE_METHODS
    if "methods" in entries:
        methods = values.methods(reader, f"{where}.methods", entries["methods"][1]) or methods
    headers: tuple[str, ...] = DEFAULT_HEADERS
    if "headers" in entries:
        headers = tuple(
            name.lower()
            for name in _strings(reader, f"{where}.headers", entries["headers"][1])
            if _valid(
                reader, entries["headers"][1], f"{where}.headers", name, values.TOKEN, "header"
            )
        )
    ignore: tuple[str, ...] = ()
    if "ignore" in entries:
        ignore = tuple(
            path
            for path in _strings(reader, f"{where}.ignore", entries["ignore"][1])
            if _valid(reader, entries["ignore"][1], f"{where}.ignore", path, _PATH, "JSON path")
        )
    learn_noise = False
    if "learn_noise" in entries:
        learn_noise = bool(reader.boolean(entries["learn_noise"][1], f"{where}.learn_noise"))
    max_body = DEFAULT_MAX_BODY
    if "max_body" in entries:
        max_body = (
            reader.integer(entries["max_body"][1], f"{where}.max_body", 0, MAX_BODY) or max_body
        )
    timeout = DEFAULT_TIMEOUT
    if "timeout" in entries:
        timeout = reader.duration(entries["timeout"][1], f"{where}.timeout", 600.0) or timeout
    record_query = False
    if "record_query" in entries:
        record_query = bool(reader.boolean(entries["record_query"][1], f"{where}.record_query"))
    if backend is None:
        return None
    return Shadow(
        backend, percent, methods, headers, ignore, learn_noise, max_body, timeout, record_query
    )


def _strings(reader: NodeReader, where: str, node: Node) -> list[str]:
    items = reader.sequence(node, where)
    found = []
    for item in items or []:
        text = reader.string(item, where)
        if text is not None:
            found.append(text)
    return found


def _valid(
    reader: NodeReader, node: Node, where: str, value: str, pattern: re.Pattern[str], what: str
) -> bool:
    if pattern.match(value):
        return True
    reader.error(node, f"{where}: {value!r} is not a {what}")
    return False
