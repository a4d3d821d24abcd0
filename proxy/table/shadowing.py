"""Reading a route's ``shadow`` key (docs/shadow.md): which backend gets a copy of the route's
requests, how many, which methods, and how its answers are compared."""

from __future__ import annotations

import re
from collections.abc import Collection
from decimal import Decimal, InvalidOperation

from yaml.nodes import Node

from proxy.table.model import SAFE_METHODS, WEIGHT_SCALE, Shadow
from proxy.table.yamlnodes import NodeReader

_KEYS = frozenset(
    {"backend", "percent", "methods", "headers", "ignore", "learn_noise", "max_body", "timeout"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
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
        backend_node = entries["backend"][1]
        backend = reader.string(backend_node, f"{where}.backend")
        if backend is not None and backend not in backends:
            known = f" (known: {', '.join(backends)})" if backends else ""
            reader.error(backend_node, f"{where}.backend: unknown backend {backend!r}{known}")
            backend = None
    percent = WEIGHT_SCALE
    if "percent" in entries:
        percent = _percent(reader, f"{where}.percent", entries["percent"][1]) or 0
    methods = SAFE_METHODS
    if "methods" in entries:
        methods = _methods(reader, f"{where}.methods", entries["methods"][1])
    headers: tuple[str, ...] = DEFAULT_HEADERS
    if "headers" in entries:
        headers = tuple(
            name.lower()
            for name in _strings(reader, f"{where}.headers", entries["headers"][1])
            if _valid(reader, entries["headers"][1], f"{where}.headers", name, _TOKEN, "header")
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
    if backend is None:
        return None
    return Shadow(backend, percent, methods, headers, ignore, learn_noise, max_body, timeout)


def _percent(reader: NodeReader, where: str, node: Node) -> int | None:
    text = reader.number_text(node, where)
    if text is None:
        return None
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        reader.error(node, f"{where}: {text!r} is not a percentage")
        return None
    basis_points = value * 100
    if not 0 <= value <= 100 or basis_points != basis_points.to_integral_value():
        reader.error(node, f"{where}: {text} is not a percentage from 0 to 100 with 2 decimals")
        return None
    return int(basis_points)


def _methods(reader: NodeReader, where: str, node: Node) -> frozenset[str]:
    methods = set()
    for method in _strings(reader, where, node):
        if not _TOKEN.match(method) or method != method.upper():
            reader.error(node, f"{where}: {method!r} is not an upper-case method name")
        else:
            methods.add(method)
    return frozenset(methods)


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
