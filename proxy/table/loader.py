"""The only reader of routing-table YAML: parse safely, validate whole, report every problem.

:func:`read_yaml` (and :func:`read_yaml_file`) is the one way this project turns YAML bytes
into a node tree, for the routing table and for route tests alike; :func:`parse_table` then
reads the tree against the field tables (``TABLE_FIELDS``, ``BACKEND_FIELDS``, ``ROUTE_FIELDS``,
``MATCH_FIELDS``, ``STICKY_FIELDS`` here; the others in ``resilience`` and ``shadowing``) and
checks the rules between keys. The result is a :class:`~proxy.table.model.Table`, or a
:class:`TableError` listing every problem as ``FILE:LINE:COL: message``, so a user fixes a file
in one pass. Compiling the table (``compile.py``) is not done here.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError

from proxy.hosts import table_host
from proxy.matching import compile_pattern
from proxy.table import fields, values
from proxy.table.fields import Field, Fields, Values
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
#: Deeper nesting is refused: PyYAML composes recursively, so 1 MiB of "[" would otherwise
#: exhaust the stack. A routing table nests about five deep.
MAX_DEPTH = 64
MAX_TIMEOUT = 3600.0
#: Bounds of the response-head limits a table may set.
MAX_RESPONSE_HEADERS = 10_000
MAX_RESPONSE_HEADER_BYTES = 1024 * 1024

_NAME = re.compile(r"[a-z0-9_-]{1,63}\Z")
_FUNCTION_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
#: What PyYAML's reader counts as a line break.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class TableError(Exception):
    """A routing table that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_table(path: str | Path) -> Table:
    """Read and validate the table at ``path``."""
    return parse_table(read_table_bytes(path), str(path))


def read_table_bytes(path: str | Path) -> bytes:
    """The file's bytes (at most one more than the size limit, which :func:`read_yaml` then
    refuses), or a TableError."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        where = Location(str(path), 1, 1)
        raise TableError([Problem(where, f"cannot read: {exc.strerror}")]) from exc


def read_yaml_file(path: str | Path) -> Node | None:
    """:func:`read_yaml` of the file at ``path``, named by it in messages."""
    return read_yaml(read_table_bytes(path), str(path))


def read_yaml(data: bytes, source: str) -> Node | None:
    """The node tree of the YAML document ``data``, or None when it holds none (an empty file).

    The one reader of YAML in this project. It refuses more than :data:`MAX_TABLE_BYTES` and
    nesting deeper than :data:`MAX_DEPTH`; it composes with ``yaml.SafeLoader``, which keeps
    each value's position and constructs no Python object; and every error PyYAML raises (a
    character YAML does not allow, bytes that are neither UTF-8 nor UTF-16, a syntax error, a
    second document) becomes a :class:`TableError` whose one problem names ``source`` with the
    line and column of the fault. Read the tree with a :class:`~proxy.table.yamlnodes.NodeReader`.
    """
    if len(data) > MAX_TABLE_BYTES:
        raise TableError(
            [Problem(Location(source, 1, 1), f"file is larger than {MAX_TABLE_BYTES} bytes")]
        )
    try:
        return yaml.compose(data, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(source, mark.line + 1, mark.column + 1) if mark else Location(source, 1, 1)
        problem = exc.problem or exc.context or "malformed"
        if exc.context and problem.startswith("but "):
            # "expected a single document in the stream, but found another document"
            problem = f"{exc.context}, {problem}"
        raise TableError([Problem(where, f"invalid YAML: {problem}")]) from None
    except ReaderError as exc:
        raise TableError([_reader_problem(data, source, exc)]) from None
    except yaml.YAMLError as exc:
        raise TableError([Problem(Location(source, 1, 1), f"invalid YAML: {exc}")]) from None


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than :data:`MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self._depth >= MAX_DEPTH:
            self.check_event()  # makes current_event the node's first event
            mark = self.current_event.start_mark
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _reader_problem(data: bytes, source: str, exc: ReaderError) -> Problem:
    """A problem at the character (or byte) PyYAML's reader refused. Its error gives only an
    offset, into the decoded text or, for bytes that do not decode, into ``data``."""
    if data.startswith(codecs.BOM_UTF16_LE):
        encoding = "utf-16-le"
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8"
    position = int(exc.position)
    if exc.encoding == "unicode":
        before = data.decode(encoding, "replace")[:position]
        message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        before = data[:position].decode(encoding, "replace")
        message = f"'{exc.encoding}' codec can't decode byte #x{exc.character:02x}: {exc.reason}"
    # Count lines and columns as PyYAML's reader does (a BOM takes no column).
    breaks = list(_BREAK.finditer(before))
    line = before[breaks[-1].end() :] if breaks else before
    where = Location(source, len(breaks) + 1, len(line) - line.count("\ufeff") + 1)
    return Problem(where, f"invalid YAML: {message}")


def digest(data: bytes) -> str:
    """A table's version: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def parse_table(data: bytes, source: str) -> Table:
    """Validate a table given as bytes; ``source`` names it in messages."""
    root = read_yaml(data, source)
    if root is None:
        raise TableError([Problem(Location(source, 1, 1), "the file is empty")])
    reader = NodeReader(source)
    table = _read_table(reader, root, source, digest(data))
    if reader.problems or table is None:
        problems = sorted(reader.problems, key=lambda p: (p.location.line, p.location.column))
        raise TableError(problems)
    return table


# Readers of the values only this module reads, for the field tables below.


def _url(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    """An upstream's (or a Lambda invoke endpoint's) base URL."""
    value = reader.string(node, where)
    problem = None if value is None else _url_problem(value)
    if problem is not None:
        reader.error(node, f"{where}: {problem}")
        return None
    return value


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


def _function_ref(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    value = reader.string(node, where)
    if value is not None and not _FUNCTION_REF.match(value):
        reader.error(node, f"{where}: {value!r} is not 'module.path:attr'")
        return None
    return value


def _kind(reader: NodeReader, where: str, node: Node, field: Field[Kind]) -> Kind | None:
    text = reader.string(node, where)
    if text is None:
        return None
    try:
        return Kind(text)
    except ValueError:
        reader.error(node, f"{where}: {text!r} is not one of {', '.join(Kind)}")
        return None


def _name(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    """A route's name, which is also the ``route`` label of its metrics."""
    name = reader.string(node, where)
    if name is not None and not _NAME.match(name):
        reader.error(node, f"{where}: bad name {name!r} (1-63 of a-z, 0-9, '_', '-')")
        return None
    if name == "none":
        reader.error(node, f"{where}: 'none' is reserved for unmatched requests")
        return None
    return name


def _path(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    path = reader.string(node, where)
    if path is not None:
        try:
            compile_pattern(path)
        except ValueError as exc:
            reader.error(node, f"{where}: {path!r}: {exc}")
            return None
    return path


def _host(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    text = reader.string(node, where)
    if text is None:
        return None
    try:
        return table_host(text)
    except ValueError as exc:
        reader.error(node, f"{where}: {text!r} {exc}")
        return None


def _headers(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[tuple[str, str], ...]]
) -> tuple[tuple[str, str], ...] | None:
    """``{Header-Name: exact value}``, names lower-cased."""
    entries = reader.mapping(node, where)
    if entries is None:
        return None
    headers: list[tuple[str, str]] = []
    for header, (key_node, value_node) in entries.items():
        if not values.TOKEN.match(header):
            reader.error(key_node, f"{where}: {header!r} is not a header name")
            continue
        value = reader.string(value_node, f"{where}.{header}")
        if value is not None:
            headers.append((header.lower(), value))
    return tuple(headers) if len(headers) == len(entries) else None


def _token(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    """A cookie's or a header's name."""
    name = reader.string(node, where)
    if name is not None and not values.TOKEN.match(name):
        reader.error(node, f"{where}: {name!r} is not a valid {field.key} name")
        return None
    return name


TABLE_VERSION = Field("version", fields.integer, minimum=0, maximum=1_000_000, required=True)
TABLE_BACKENDS = Field("backends", fields.node, required=True)
TABLE_ROUTES = Field("routes", fields.node, required=True)
TABLE_FIELDS = (TABLE_VERSION, TABLE_BACKENDS, TABLE_ROUTES)

#: Where a backend is: exactly one of these keys, which decides its field table.
_TARGETS: Mapping[str, Field[str]] = MappingProxyType(
    {
        "url": Field("url", _url),
        "function": Field("function", _function_ref),
        "lambda": Field("lambda", _url),
    }
)
_KIND = Field("kind", _kind, default=Kind.NEW)
_TIMEOUT = Field("timeout", fields.duration, default=DEFAULT_TIMEOUT, maximum=MAX_TIMEOUT)
#: Set for a function backend too, which never connects: the model keeps one shape.
_CONNECT_TIMEOUT = Field(
    "connect_timeout", fields.duration, default=DEFAULT_CONNECT_TIMEOUT, maximum=MAX_TIMEOUT
)
_CIRCUIT_BREAKER = Field("circuit_breaker", read_circuit_breaker)
_MAX_RESPONSE_HEADERS = Field(
    "max_response_headers",
    fields.integer,
    default=DEFAULT_MAX_RESPONSE_HEADERS,
    minimum=1,
    maximum=MAX_RESPONSE_HEADERS,
)
_MAX_RESPONSE_HEADER_BYTES = Field(
    "max_response_header_bytes",
    fields.integer,
    default=DEFAULT_MAX_RESPONSE_HEADER_BYTES,
    minimum=1,
    maximum=MAX_RESPONSE_HEADER_BYTES,
)
#: Keys that apply only to url and lambda backends (a function is called, not connected to).
_REMOTE_ONLY = (_CONNECT_TIMEOUT, _MAX_RESPONSE_HEADERS, _MAX_RESPONSE_HEADER_BYTES)
#: max_concurrency's default depends on the target, so each target has its own field table.
_MAX_CONCURRENCY: Mapping[str, Field[int]] = MappingProxyType(
    {
        target: Field(
            "max_concurrency", fields.integer, default=default, minimum=1, maximum=100_000
        )
        for target, default in (
            ("url", DEFAULT_URL_CONCURRENCY),
            ("function", DEFAULT_FUNCTION_CONCURRENCY),
            ("lambda", DEFAULT_LAMBDA_CONCURRENCY),
        )
    }
)
#: A backend's field table, by its target.
BACKEND_FIELDS: Mapping[str, Fields] = MappingProxyType(
    {
        target: (
            field,
            _KIND,
            _TIMEOUT,
            _CONNECT_TIMEOUT,
            _MAX_CONCURRENCY[target],
            _CIRCUIT_BREAKER,
            _MAX_RESPONSE_HEADERS,
            _MAX_RESPONSE_HEADER_BYTES,
        )
        for target, field in _TARGETS.items()
    }
)
_BACKEND_KEYS = frozenset(key for table in BACKEND_FIELDS.values() for key in fields.keys(table))


def _read_match(reader: NodeReader, where: str, node: Node, field: Field[Match]) -> Match | None:
    got = fields.read(reader, where, node, MATCH_FIELDS)
    path = None if got is None else got.get(_MATCH_PATH)
    if got is None or path is None:
        return None
    return Match(path, got.get(_MATCH_METHODS), got.get(_MATCH_HOST), got[_MATCH_HEADERS])


def _read_sticky(reader: NodeReader, where: str, node: Node, field: Field[Sticky]) -> Sticky | None:
    got = fields.read(reader, where, node, STICKY_FIELDS)
    if got is None:
        return None
    sources = [source for source in (_STICKY_COOKIE, _STICKY_HEADER) if source in got]
    if len(sources) != 1:
        reader.error(node, f"{where}: exactly one of cookie, header is required")
        return None
    source = sources[0]
    set_node = got.key_node(_STICKY_SET)
    if set_node is not None and source is not _STICKY_COOKIE:
        reader.error(set_node, f"{where}.set: applies only to a cookie")
    name = got.get(source)
    if name is None:
        return None
    if source is _STICKY_COOKIE:
        return Sticky(cookie=name, header=None, set_cookie=got[_STICKY_SET])
    return Sticky(cookie=None, header=name.lower(), set_cookie=False)


_MATCH_PATH = Field("path", _path, required=True)
#: Left out: any method.
_MATCH_METHODS = Field("methods", fields.methods)
_MATCH_HOST = Field("host", _host)
_MATCH_HEADERS: Field[tuple[tuple[str, str], ...]] = Field("headers", _headers, default=())
MATCH_FIELDS = (_MATCH_PATH, _MATCH_METHODS, _MATCH_HOST, _MATCH_HEADERS)

_STICKY_COOKIE = Field("cookie", _token)
_STICKY_HEADER = Field("header", _token)
_STICKY_SET = Field("set", fields.boolean, default=False)
STICKY_FIELDS = (_STICKY_COOKIE, _STICKY_HEADER, _STICKY_SET)

_ROUTE_NAME = Field("name", _name, required=True)
_ROUTE_MATCH = Field("match", _read_match, required=True)
_ROUTE_BACKEND = Field("backend", fields.string)
_ROUTE_SPLIT = Field("split", fields.node)
_ROUTE_STICKY = Field("sticky", _read_sticky)
_ROUTE_FALLBACK = Field("fallback", fields.node)
_ROUTE_RETRIES = Field("retries", read_retries)
_ROUTE_SHADOW = Field("shadow", fields.node)
#: The keys read once the route's name is known, which then names the route in messages.
_ROUTE_BODY = (
    _ROUTE_MATCH,
    _ROUTE_BACKEND,
    _ROUTE_SPLIT,
    _ROUTE_STICKY,
    _ROUTE_FALLBACK,
    _ROUTE_RETRIES,
    _ROUTE_SHADOW,
)
ROUTE_FIELDS = (_ROUTE_NAME, *_ROUTE_BODY)


def _read_table(reader: NodeReader, root: Node, source: str, digest: str) -> Table | None:
    top = fields.read(reader, "table", root, TABLE_FIELDS, prefix="")
    if top is None:
        return None
    version = top.get(TABLE_VERSION)
    version_node = top.node(TABLE_VERSION)
    if version is not None and version_node is not None and version != 1:
        reader.error(version_node, f"version: {version} is not supported (only 1 is)")
    backends_node, routes_node = top.get(TABLE_BACKENDS), top.get(TABLE_ROUTES)
    backends = {} if backends_node is None else _read_backends(reader, backends_node)
    routes = () if routes_node is None else _read_routes(reader, routes_node, backends)
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
    """The backend, unless it has not exactly one target (then routes naming it are reported:
    which kind of backend was meant is unknown)."""
    where = f"backends.{name}"
    entries = reader.mapping(node, where, _BACKEND_KEYS)
    if entries is None:
        return None
    targets = [key for key in _TARGETS if key in entries]
    if len(targets) != 1:
        found = ", ".join(targets) if targets else "none"
        reader.error(
            node, f"{where}: exactly one of url, function, lambda is required (found: {found})"
        )
        return None
    target = targets[0]
    got = fields.read_entries(reader, where, node, entries, BACKEND_FIELDS[target])
    if target == "function":
        for field in _REMOTE_ONLY:
            key_node = got.key_node(field)
            if key_node is not None:
                reader.error(
                    key_node, f"{where}.{field.key}: applies only to url and lambda backends"
                )
    value = got.get(_TARGETS[target])
    if value is None:
        # Reported already; "" stands in for it so that routes naming this backend are not
        # also told that it is unknown.
        value = ""
    return Backend(
        name=name,
        kind=got[_KIND],
        url=value if target == "url" else None,
        function=value if target == "function" else None,
        lambda_url=value if target == "lambda" else None,
        timeout=got[_TIMEOUT],
        connect_timeout=got[_CONNECT_TIMEOUT],
        max_concurrency=got[_MAX_CONCURRENCY[target]],
        location=reader.location(node),
        circuit_breaker=got.get(_CIRCUIT_BREAKER),
        max_response_headers=got[_MAX_RESPONSE_HEADERS],
        max_response_header_bytes=got[_MAX_RESPONSE_HEADER_BYTES],
    )


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
    entries = reader.mapping(node, where, fields.keys(ROUTE_FIELDS))
    if entries is None:
        return None
    name = fields.read_entries(reader, where, node, entries, (_ROUTE_NAME,)).get(_ROUTE_NAME)
    if name is not None:
        where = f"routes[{index}] ({name})"
    got = fields.read_entries(reader, where, node, entries, _ROUTE_BODY)
    split = _read_target(reader, where, node, got, backends)
    sticky_key = got.key_node(_ROUTE_STICKY)
    if sticky_key is not None and _ROUTE_SPLIT not in got:
        reader.error(sticky_key, f"{where}.sticky: applies only to a route with a split")
    fallback, fallback_statuses = None, frozenset[int]()
    fallback_node = got.get(_ROUTE_FALLBACK)
    if fallback_node is not None:
        fallback, fallback_statuses = read_fallback(
            reader, f"{where}.fallback", fallback_node, backends
        )
    shadow_node = got.get(_ROUTE_SHADOW)
    shadow = None
    if shadow_node is not None:
        shadow = read_shadow(reader, f"{where}.shadow", shadow_node, backends)
    match = got.get(_ROUTE_MATCH)
    if name is None or match is None or split is None:
        return None
    return Route(
        name,
        match,
        split,
        got.get(_ROUTE_STICKY),
        index,
        reader.location(node),
        fallback,
        fallback_statuses,
        got.get(_ROUTE_RETRIES),
        shadow,
    )


def _read_target(
    reader: NodeReader, where: str, node: Node, got: Values, backends: dict[str, Backend]
) -> tuple[tuple[str, int], ...] | None:
    """The route's split: its ``backend`` (all of it) or its ``split`` (weights summing to 100)."""
    if (_ROUTE_BACKEND in got) == (_ROUTE_SPLIT in got):
        reader.error(node, f"{where}: exactly one of backend, split is required")
        return None
    name_node, split_node = got.node(_ROUTE_BACKEND), got.get(_ROUTE_SPLIT)
    if name_node is not None:
        name = got.get(_ROUTE_BACKEND)
        if name is not None:
            name = values.reference(reader, f"{where}.backend", name_node, name, backends)
        return None if name is None else ((name, WEIGHT_SCALE),)
    if split_node is None:
        return None
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
