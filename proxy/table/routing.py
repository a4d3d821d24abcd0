"""Routes in the routing table: the field tables of a route, its ``match`` and its
``sticky``, and the reading of the ``routes`` list into :class:`~proxy.table.model.Route`
values, checked against the backends already read (docs/reference.md, "Routes")."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

from yaml.nodes import MappingNode, Node, ScalarNode

from proxy.hosts import table_host
from proxy.matching import compile_pattern
from proxy.rewrite import compile_rewrite
from proxy.table import fields, values
from proxy.table.backends import IDLE_TIMEOUT, MAX_TIMEOUT
from proxy.table.fields import Field, Values
from proxy.table.headermaps import read_header_map
from proxy.table.model import WEIGHT_SCALE, Backend, Match, Rewrite, Route, Sticky
from proxy.table.resilience import DEFAULT_RESEND_BODY, read_fallback, read_retries
from proxy.table.rollout import read_rollout
from proxy.table.shadowing import read_shadow
from proxy.table.values import NAME
from proxy.table.yamlnodes import NodeReader


def _name(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
    """A route's name, which is also the ``route`` label of its metrics."""
    name = reader.string(node, where)
    if name is not None and not NAME.match(name):
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


def _read_rewrite(
    reader: NodeReader, where: str, node: Node, field: Field[Rewrite]
) -> Rewrite | None:
    got = fields.read(reader, where, node, REWRITE_FIELDS)
    if got is None:
        return None
    given = [key for key in REWRITE_FIELDS if key in got]
    if len(given) != 1:
        reader.error(node, f"{where}: exactly one of prefix, path is required")
        return None
    value = got.get(given[0])
    if value is None:
        return None
    if given[0] is _REWRITE_PREFIX:
        return Rewrite(prefix=value, path=None)
    return Rewrite(prefix=None, path=value)


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

_REWRITE_PREFIX = Field("prefix", fields.string)
_REWRITE_PATH = Field("path", fields.string)
REWRITE_FIELDS = (_REWRITE_PREFIX, _REWRITE_PATH)

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
#: A route's own timeouts win over its backends' (no default: the backend's then).
_ROUTE_TIMEOUT = Field("timeout", fields.duration, minimum=0, maximum=MAX_TIMEOUT)
_ROUTE_IDLE_TIMEOUT = IDLE_TIMEOUT
_ROUTE_REWRITE = Field("rewrite", _read_rewrite)
_ROUTE_REQUEST_HEADERS = Field("request_headers", read_header_map)
_ROUTE_RESPONSE_HEADERS = Field("response_headers", read_header_map)
_ROUTE_AUTHORIZER = Field("authorizer", fields.string)
_ROUTE_OPTIONAL = Field("optional", fields.boolean, default=False)
_ROUTE_ROLLOUT = Field("rollout", fields.node)
#: The keys read once the route's name is known, which then names the route in messages.
_ROUTE_BODY = (
    _ROUTE_MATCH,
    _ROUTE_BACKEND,
    _ROUTE_SPLIT,
    _ROUTE_STICKY,
    _ROUTE_FALLBACK,
    _ROUTE_RETRIES,
    _ROUTE_SHADOW,
    _ROUTE_TIMEOUT,
    _ROUTE_IDLE_TIMEOUT,
    _ROUTE_REWRITE,
    _ROUTE_REQUEST_HEADERS,
    _ROUTE_RESPONSE_HEADERS,
    _ROUTE_AUTHORIZER,
    _ROUTE_OPTIONAL,
    _ROUTE_ROLLOUT,
)
ROUTE_FIELDS = (_ROUTE_NAME, *_ROUTE_BODY)


def read_routes(
    reader: NodeReader,
    node: Node,
    backends: dict[str, Backend],
    authorizers: Collection[str] = (),
) -> tuple[Route, ...]:
    items = reader.sequence(node, "routes")
    if items is None:
        return ()
    if not items:
        reader.error(node, "routes: at least one route is required")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        route = _read_route(reader, index, item, backends, authorizers)
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
    reader: NodeReader,
    index: int,
    node: Node,
    backends: dict[str, Backend],
    authorizers: Collection[str],
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
    fallback, fallback_statuses, resend_body, unsafe = (
        None,
        frozenset[int](),
        DEFAULT_RESEND_BODY,
        False,
    )
    fallback_node = got.get(_ROUTE_FALLBACK)
    if fallback_node is not None:
        fallback, fallback_statuses, resend_body, unsafe = read_fallback(
            reader, f"{where}.fallback", fallback_node, backends
        )
    shadow_node = got.get(_ROUTE_SHADOW)
    shadow = None
    if shadow_node is not None:
        shadow = read_shadow(reader, f"{where}.shadow", shadow_node, backends)
    match = got.get(_ROUTE_MATCH)
    rewrite = got.get(_ROUTE_REWRITE)
    if rewrite is not None and match is not None:
        try:
            compile_rewrite(compile_pattern(match.path), rewrite.prefix, rewrite.path)
        except ValueError as exc:
            key = "prefix" if rewrite.prefix is not None else "path"
            text = rewrite.prefix if rewrite.prefix is not None else rewrite.path
            reader.error(
                got.node(_ROUTE_REWRITE) or node, f"{where}.rewrite.{key}: {text!r}: {exc}"
            )
            rewrite = None
    authorizer = got.get(_ROUTE_AUTHORIZER)
    authorizer_node = got.node(_ROUTE_AUTHORIZER)
    if authorizer is not None and authorizer_node is not None and authorizer not in authorizers:
        known = f" (known: {', '.join(authorizers)})" if authorizers else ""
        reader.error(
            authorizer_node, f"{where}.authorizer: unknown authorizer {authorizer!r}{known}"
        )
    optional_key = got.key_node(_ROUTE_OPTIONAL)
    if optional_key is not None and _ROUTE_AUTHORIZER not in got:
        reader.error(optional_key, f"{where}.optional: applies only to a route with an authorizer")
    rollout = None
    rollout_node = got.get(_ROUTE_ROLLOUT)
    if rollout_node is not None:
        if _ROUTE_SPLIT not in got:
            reader.error(rollout_node, f"{where}.rollout: applies only to a route with a split")
        else:
            rollout = read_rollout(reader, f"{where}.rollout", rollout_node, split, backends)
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
        timeout=got.get(_ROUTE_TIMEOUT),
        idle_timeout=got.get(_ROUTE_IDLE_TIMEOUT),
        rewrite=rewrite,
        resend_body=resend_body,
        fallback_unsafe_methods=unsafe,
        request_headers=got.get(_ROUTE_REQUEST_HEADERS),
        response_headers=got.get(_ROUTE_RESPONSE_HEADERS),
        authorizer=authorizer,
        authorizer_optional=got[_ROUTE_OPTIONAL],
        rollout=rollout,
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
