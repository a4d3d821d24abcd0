"""The only reader of routing-table YAML: parse safely, validate whole, report every problem.

Produces a :class:`~proxy.table.model.Table` or raises :class:`TableError` listing every
problem as ``FILE:LINE:COL: message``, so a user fixes a file in one pass.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from proxy.hosts import table_host
from proxy.matching import compile_pattern
from proxy.table import values
from proxy.table.model import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FUNCTION_CONCURRENCY,
    DEFAULT_LAMBDA_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_HEADER_BYTES,
    DEFAULT_MAX_RESPONSE_HEADERS,
    DEFAULT_TIMEOUT,
    DEFAULT_URL_CONCURRENCY,
    WEIGHT_SCALE,
    Backend,
    Kind,
    Location,
    Match,
    Route,
    Sticky,
    Table,
)
from proxy.table.resilience import read_circuit_breaker, read_fallback, read_retries
from proxy.table.shadowing import read_shadow
from proxy.table.yamlnodes import NodeReader, Problem

#: A routing table is small; a bigger file is a mistake or an attack on the parser.
MAX_TABLE_BYTES = 1024 * 1024
MAX_TIMEOUT = 3600.0

_NAME = re.compile(r"[a-z0-9_-]{1,63}\Z")
_FUNCTION_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")

_TOP_KEYS = frozenset({"version", "backends", "routes"})
_BACKEND_KEYS = frozenset(
    {
        "url",
        "function",
        "lambda",
        "kind",
        "timeout",
        "connect_timeout",
        "max_concurrency",
        "circuit_breaker",
        "max_response_headers",
        "max_response_header_bytes",
    }
)
#: Bounds of the response-head limits a table may set.
MAX_RESPONSE_HEADERS = 10_000
MAX_RESPONSE_HEADER_BYTES = 1024 * 1024
_ROUTE_KEYS = frozenset(
    {"name", "match", "backend", "split", "sticky", "fallback", "retries", "shadow"}
)
_MATCH_KEYS = frozenset({"path", "methods", "host", "headers"})
_STICKY_KEYS = frozenset({"cookie", "header", "set"})


class TableError(Exception):
    """A routing table that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_table(path: str | Path) -> Table:
    """Read and validate the table at ``path``."""
    return parse_table(read_table_bytes(path), str(path))


def read_table_bytes(path: str | Path) -> bytes:
    """The file's bytes (at most one more than the size limit), or a TableError."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        where = Location(str(path), 1, 1)
        raise TableError([Problem(where, f"cannot read: {exc.strerror}")]) from exc


def digest(data: bytes) -> str:
    """A table's version: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def parse_table(data: bytes, source: str) -> Table:
    """Validate a table given as bytes; ``source`` names it in messages."""
    if len(data) > MAX_TABLE_BYTES:
        raise TableError(
            [Problem(Location(source, 1, 1), f"file is larger than {MAX_TABLE_BYTES} bytes")]
        )
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(source, mark.line + 1, mark.column + 1) if mark else Location(source, 1, 1)
        raise TableError([Problem(where, f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise TableError([Problem(Location(source, 1, 1), f"invalid YAML: {exc}")]) from None
    if root is None:
        raise TableError([Problem(Location(source, 1, 1), "the file is empty")])
    reader = NodeReader(source)
    table = _read_table(reader, root, source, digest(data))
    if reader.problems or table is None:
        problems = sorted(reader.problems, key=lambda p: (p.location.line, p.location.column))
        raise TableError(problems)
    return table


def _read_table(reader: NodeReader, root: Node, source: str, digest: str) -> Table | None:
    top = reader.mapping(root, "table", _TOP_KEYS)
    if top is None:
        return None
    for key in ("version", "backends", "routes"):
        if key not in top:
            reader.error(root, f"table: missing required key {key!r}")
    if "version" in top:
        version_node = top["version"][1]
        version = reader.integer(version_node, "version", 0, 1_000_000)
        if version is not None and version != 1:
            reader.error(version_node, f"version: {version} is not supported (only 1 is)")
    backends = _read_backends(reader, top["backends"][1]) if "backends" in top else {}
    routes = _read_routes(reader, top["routes"][1], backends) if "routes" in top else ()
    return Table(1, MappingProxyType(backends), routes, source, digest)


def _read_backends(reader: NodeReader, node: Node) -> dict[str, Backend]:
    entries = reader.mapping(node, "backends")
    if entries is None:
        return {}
    if not entries:
        reader.error(node, "backends: at least one backend is required")
    backends: dict[str, Backend] = {}
    for name, (key_node, value_node) in entries.items():
        if not _NAME.match(name):
            reader.error(key_node, f"backends: bad name {name!r} (1-63 of a-z, 0-9, '_', '-')")
            continue
        backend = _read_backend(reader, name, value_node)
        if backend is not None:
            backends[name] = backend
    return backends


def _read_backend(reader: NodeReader, name: str, node: Node) -> Backend | None:
    where = f"backends.{name}"
    entries = reader.mapping(node, where, _BACKEND_KEYS)
    if entries is None:
        return None
    targets = [key for key in ("url", "function", "lambda") if key in entries]
    if len(targets) != 1:
        found = ", ".join(targets) if targets else "none"
        reader.error(
            node, f"{where}: exactly one of url, function, lambda is required (found: {found})"
        )
        return None
    target = targets[0]
    target_node = entries[target][1]
    value = reader.string(target_node, f"{where}.{target}")
    if value is not None:
        if target == "function":
            if not _FUNCTION_REF.match(value):
                reader.error(target_node, f"{where}.function: {value!r} is not 'module.path:attr'")
        else:
            problem = _url_problem(value)
            if problem:
                reader.error(target_node, f"{where}.{target}: {problem}")
    kind = Kind.NEW
    if "kind" in entries:
        kind_node = entries["kind"][1]
        text = reader.string(kind_node, f"{where}.kind")
        if text is not None:
            if text not in ("legacy", "new"):
                reader.error(kind_node, f"{where}.kind: {text!r} is not one of legacy, new")
            else:
                kind = Kind(text)
    timeout = DEFAULT_TIMEOUT
    if "timeout" in entries:
        timeout = reader.duration(entries["timeout"][1], f"{where}.timeout", MAX_TIMEOUT) or timeout
    connect_timeout = DEFAULT_CONNECT_TIMEOUT
    if "connect_timeout" in entries:
        key_node, value_node = entries["connect_timeout"]
        if target == "function":
            reader.error(
                key_node, f"{where}.connect_timeout: applies only to url and lambda backends"
            )
        connect_timeout = (
            reader.duration(value_node, f"{where}.connect_timeout", MAX_TIMEOUT) or connect_timeout
        )
    concurrency: int | None = {
        "url": DEFAULT_URL_CONCURRENCY,
        "function": DEFAULT_FUNCTION_CONCURRENCY,
        "lambda": DEFAULT_LAMBDA_CONCURRENCY,
    }[target]
    if "max_concurrency" in entries:
        value_node = entries["max_concurrency"][1]
        concurrency = reader.integer(value_node, f"{where}.max_concurrency", 1, 100_000)
    breaker = None
    if "circuit_breaker" in entries:
        breaker = read_circuit_breaker(reader, where, entries["circuit_breaker"][1])
    head_limits = []
    for key, default, maximum in (
        ("max_response_headers", DEFAULT_MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEADERS),
        ("max_response_header_bytes", DEFAULT_MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADER_BYTES),
    ):
        limit = default
        if key in entries:
            key_node, value_node = entries[key]
            if target == "function":
                reader.error(key_node, f"{where}.{key}: applies only to url and lambda backends")
            limit = reader.integer(value_node, f"{where}.{key}", 1, maximum) or default
        head_limits.append(limit)
    if value is None:
        return None
    return Backend(
        name=name,
        kind=kind,
        url=value if target == "url" else None,
        function=value if target == "function" else None,
        lambda_url=value if target == "lambda" else None,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_concurrency=concurrency,
        location=reader.location(node),
        circuit_breaker=breaker,
        max_response_headers=head_limits[0],
        max_response_header_bytes=head_limits[1],
    )


def _url_problem(value: str) -> str | None:
    """Why ``value`` cannot be an upstream base URL, or None."""
    match = re.match(r"(https?)://([^/?#]*)([^?#]*)(.*)\Z", value)
    if match is None:
        return f"{value!r} is not an http:// or https:// URL"
    authority, rest = match.group(2), match.group(4)
    if not authority or authority.startswith(":"):
        return f"{value!r} has no host"
    if "@" in authority:
        return f"{value!r}: credentials in the URL are not supported"
    port = authority.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in authority else ""
    if ":" in authority.rsplit("]", 1)[-1] and not (port.isdigit() and 0 < int(port) < 65536):
        return f"{value!r} has a bad port"
    if rest:
        return f"{value!r}: a backend URL takes no query string or fragment"
    return None


def _read_routes(reader: NodeReader, node: Node, backends: dict[str, Backend]) -> tuple[Route, ...]:
    items = reader.sequence(node, "routes")
    if items is None:
        return ()
    if not items:
        reader.error(node, "routes: at least one route is required")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        route = _read_route(reader, index, item, backends)
        name_node = _name_node(item)
        if name_node is not None:
            name = name_node.value
            if name in seen:
                reader.error(
                    name_node,
                    f"routes[{index}].name: duplicate route name {name!r} "
                    f"(first at line {seen[name]})",
                )
                continue
            seen[name] = reader.location(name_node).line
        if route is not None:
            routes.append(route)
    return tuple(routes)


def _name_node(item: Node) -> ScalarNode | None:
    """The node of a route's ``name`` when it is a string, to find duplicates even in routes
    that are otherwise invalid."""
    if isinstance(item, MappingNode):
        for key_node, value_node in item.value:
            if key_node.value == "name" and isinstance(value_node, ScalarNode):
                return value_node
    return None


def _read_route(
    reader: NodeReader, index: int, node: Node, backends: dict[str, Backend]
) -> Route | None:
    where = f"routes[{index}]"
    entries = reader.mapping(node, where, _ROUTE_KEYS)
    if entries is None:
        return None
    name: str | None = None
    if "name" not in entries:
        reader.error(node, f"{where}: missing required key 'name'")
    else:
        name_node = entries["name"][1]
        name = reader.string(name_node, f"{where}.name")
        if name is not None and not _NAME.match(name):
            reader.error(name_node, f"{where}.name: bad name {name!r} (1-63 of a-z, 0-9, '_', '-')")
            name = None
        elif name == "none":
            reader.error(name_node, f"{where}.name: 'none' is reserved for unmatched requests")
            name = None
        if name is not None:
            where = f"routes[{index}] ({name})"
    match = None
    if "match" not in entries:
        reader.error(node, f"{where}: missing required key 'match'")
    else:
        match = _read_match(reader, where, entries["match"][1])
    split = _read_target(reader, where, node, entries, backends)
    sticky = None
    if "sticky" in entries:
        key_node, value_node = entries["sticky"]
        if "split" not in entries:
            reader.error(key_node, f"{where}.sticky: applies only to a route with a split")
        sticky = _read_sticky(reader, where, value_node)
    fallback, fallback_statuses = None, frozenset[int]()
    if "fallback" in entries:
        fallback, fallback_statuses = read_fallback(reader, where, entries["fallback"][1], backends)
    retries = read_retries(reader, where, entries["retries"][1]) if "retries" in entries else None
    shadow = None
    if "shadow" in entries:
        shadow = read_shadow(reader, where, entries["shadow"][1], backends)
    if name is None or match is None or split is None:
        return None
    return Route(
        name,
        match,
        split,
        sticky,
        index,
        reader.location(node),
        fallback,
        fallback_statuses,
        retries,
        shadow,
    )


def _read_target(
    reader: NodeReader,
    where: str,
    node: Node,
    entries: dict[str, tuple[Node, Node]],
    backends: dict[str, Backend],
) -> tuple[tuple[str, int], ...] | None:
    if ("backend" in entries) == ("split" in entries):
        reader.error(node, f"{where}: exactly one of backend, split is required")
        return None
    if "backend" in entries:
        name = values.backend(reader, f"{where}.backend", entries["backend"][1], backends)
        return None if name is None else ((name, WEIGHT_SCALE),)
    split_node = entries["split"][1]
    shares = reader.mapping(split_node, f"{where}.split")
    if shares is None:
        return None
    if not shares:
        reader.error(split_node, f"{where}.split: at least one backend is required")
        return None
    result: list[tuple[str, int]] = []
    ok = True
    for name, (key_node, value_node) in shares.items():
        if name not in backends:
            reader.error(
                key_node, f"{where}.split: unknown backend {name!r}{values.known(backends)}"
            )
            ok = False
        weight = values.percentage(reader, f"{where}.split.{name}", value_node)
        if weight is None:
            ok = False
            continue
        result.append((name, weight))
    if ok and sum(w for _, w in result) != WEIGHT_SCALE:
        total = Decimal(sum(w for _, w in result)) / 100
        reader.error(split_node, f"{where}.split: weights must sum to 100, not {total:f}")
        ok = False
    return tuple(result) if ok else None


def _read_match(reader: NodeReader, where: str, node: Node) -> Match | None:
    entries = reader.mapping(node, f"{where}.match", _MATCH_KEYS)
    if entries is None:
        return None
    path: str | None = None
    if "path" not in entries:
        reader.error(node, f"{where}.match: missing required key 'path'")
    else:
        path_node = entries["path"][1]
        path = reader.string(path_node, f"{where}.match.path")
        if path is not None:
            try:
                compile_pattern(path)
            except ValueError as exc:
                reader.error(path_node, f"{where}.match.path: {path!r}: {exc}")
                path = None
    methods = None
    if "methods" in entries:
        methods = values.methods(reader, f"{where}.match.methods", entries["methods"][1])
    host = None
    if "host" in entries:
        host_node = entries["host"][1]
        text = reader.string(host_node, f"{where}.match.host")
        if text is not None:
            try:
                host = table_host(text)
            except ValueError as exc:
                reader.error(host_node, f"{where}.match.host: {text!r} {exc}")
    headers: list[tuple[str, str]] = []
    if "headers" in entries:
        header_entries = reader.mapping(entries["headers"][1], f"{where}.match.headers")
        for header, (key_node, value_node) in (header_entries or {}).items():
            if not values.TOKEN.match(header):
                reader.error(key_node, f"{where}.match.headers: {header!r} is not a header name")
                continue
            value = reader.string(value_node, f"{where}.match.headers.{header}")
            if value is not None:
                headers.append((header.lower(), value))
    if path is None:
        return None
    return Match(path, methods, host, tuple(headers))


def _read_sticky(reader: NodeReader, where: str, node: Node) -> Sticky | None:
    entries = reader.mapping(node, f"{where}.sticky", _STICKY_KEYS)
    if entries is None:
        return None
    sources = [key for key in ("cookie", "header") if key in entries]
    if len(sources) != 1:
        reader.error(node, f"{where}.sticky: exactly one of cookie, header is required")
        return None
    source = sources[0]
    value_node = entries[source][1]
    name = reader.string(value_node, f"{where}.sticky.{source}")
    if name is not None and not values.TOKEN.match(name):
        reader.error(value_node, f"{where}.sticky.{source}: {name!r} is not a valid {source} name")
        name = None
    set_cookie = False
    if "set" in entries:
        key_node, flag_node = entries["set"]
        if source != "cookie":
            reader.error(key_node, f"{where}.sticky.set: applies only to a cookie")
        set_cookie = bool(reader.boolean(flag_node, f"{where}.sticky.set"))
    if name is None:
        return None
    if source == "cookie":
        return Sticky(cookie=name, header=None, set_cookie=set_cookie)
    return Sticky(cookie=None, header=name.lower(), set_cookie=False)
