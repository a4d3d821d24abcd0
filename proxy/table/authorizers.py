"""The table's ``authorizers`` (docs/authorizers.md): each one's target (``url``, ``function``
or ``lambda``), the values that identify a caller, its cache TTL and timeout, and the headers it
is sent and sets, read into :class:`~proxy.table.model.Authorizer` values. Which keys apply to
which kind, and what a header key may name, is checked here; the calling is proxy/authorizer.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from yaml.nodes import Node

from proxy.table import fields, values
from proxy.table.backends import read_function_ref, read_url
from proxy.table.fields import Field, Fields, Values
from proxy.table.headermaps import allowed_name
from proxy.table.model import DEFAULT_AUTHORIZER_TIMEOUT, Authorizer, IdentitySource
from proxy.table.values import TOKEN
from proxy.table.yamlnodes import NodeReader

#: API Gateway caches an authorizer's answer for an hour at most.
MAX_TTL = 3600.0
MAX_TIMEOUT = 60.0


def _identity(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[IdentitySource, ...]]
) -> tuple[IdentitySource, ...] | None:
    """``[cookie:NAME, header:NAME, ...]``: at least one, each once."""
    items = reader.sequence(node, where)
    if items is None:
        return None
    if not items:
        reader.error(node, f"{where}: list at least one cookie:NAME or header:NAME")
        return None
    found: list[IdentitySource] = []
    for index, item in enumerate(items):
        text = reader.string(item, f"{where}[{index}]")
        if text is None:
            return None
        source, _, name = text.partition(":")
        if source not in ("cookie", "header") or not TOKEN.match(name):
            reader.error(item, f"{where}[{index}]: {text!r} is not cookie:NAME or header:NAME")
            return None
        # A header the identity is read from is also sent to a url authorizer (by default).
        refused = "cannot identify a caller"
        if (
            source == "header"
            and allowed_name(reader, f"{where}[{index}]", item, name, refused) is None
        ):
            return None
        value = IdentitySource(source, name.lower() if source == "header" else name)
        if value in found:
            reader.error(item, f"{where}[{index}]: {text!r} is listed twice")
            return None
        found.append(value)
    return tuple(found)


def _forwardable(reader: NodeReader, where: str, node: Node, name: str) -> bytes | None:
    """``name`` lower-case, if the client's values of it may be sent to a url authorizer."""
    return allowed_name(reader, where, node, name, "is never forwarded")


def _names(
    check: Callable[[NodeReader, str, Node, str], bytes | None],
) -> Callable[[NodeReader, str, Node, Field[tuple[bytes, ...]]], tuple[bytes, ...] | None]:
    """A reader of a list of header names, each passed by ``check`` (lower-cased, once)."""

    def read(
        reader: NodeReader, where: str, node: Node, field: Field[tuple[bytes, ...]]
    ) -> tuple[bytes, ...] | None:
        items = reader.sequence(node, where)
        if items is None:
            return None
        names: list[bytes] = []
        for index, item in enumerate(items):
            name = reader.string(item, f"{where}[{index}]")
            lowered = check(reader, f"{where}[{index}]", item, name) if name is not None else None
            if lowered is None:
                return None
            if lowered not in names:
                names.append(lowered)
        return tuple(names)

    return read


def _context_headers(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[tuple[str, bytes], ...]]
) -> tuple[tuple[str, bytes], ...] | None:
    """``{context key: Header-Name}``: a function authorizer's context values as headers."""
    entries = reader.mapping(node, where)
    if entries is None:
        return None
    pairs: list[tuple[str, bytes]] = []
    taken: set[bytes] = set()
    for key, (_, value_node) in entries.items():
        name = reader.string(value_node, f"{where}.{key}")
        lowered = None if name is None else allowed_name(reader, f"{where}.{key}", value_node, name)
        if lowered is None:
            return None
        if lowered in taken:
            reader.error(value_node, f"{where}.{key}: header {name!r} is already mapped")
            return None
        taken.add(lowered)
        pairs.append((key, lowered))
    return tuple(pairs)


_TARGETS: Mapping[str, Field[str]] = MappingProxyType(
    {
        "url": Field("url", read_url),
        "function": Field("function", read_function_ref),
        "lambda": Field("lambda", read_url),
    }
)
_IDENTITY = Field("identity", _identity, required=True)
_TTL = Field("ttl", fields.duration, default=0.0, minimum=0, maximum=MAX_TTL)
_TIMEOUT = Field(
    "timeout", fields.duration, default=DEFAULT_AUTHORIZER_TIMEOUT, maximum=MAX_TIMEOUT
)
#: Request headers sent on to a url authorizer.
_FORWARD_HEADERS = Field("forward_headers", _names(_forwardable))
#: Header names copied from a url authorizer's answer onto backend requests.
_UPSTREAM_HEADERS: Field[tuple[bytes, ...]] = Field(
    "upstream_headers", _names(allowed_name), default=()
)
_CONTEXT_HEADERS: Field[tuple[tuple[str, bytes], ...]] = Field(
    "context_headers", _context_headers, default=()
)
#: Keys of one kind only: a url authorizer answers with headers, a function with a context.
_URL_ONLY: Fields = (_FORWARD_HEADERS, _UPSTREAM_HEADERS)
_FUNCTION_ONLY: Fields = (_CONTEXT_HEADERS,)
AUTHORIZER_FIELDS: Fields = (
    *_TARGETS.values(),
    _IDENTITY,
    _TTL,
    _TIMEOUT,
    _FORWARD_HEADERS,
    _UPSTREAM_HEADERS,
    _CONTEXT_HEADERS,
)


def read_authorizers(
    reader: NodeReader, node: Node
) -> tuple[dict[str, Authorizer], tuple[str, ...]]:
    """The valid authorizers, and the names of every one declared (a route naming one that
    is invalid is not also told that it is unknown)."""
    entries = reader.mapping(node, "authorizers")
    if entries is None:
        return {}, ()
    found: dict[str, Authorizer] = {}
    for name, value_node in values.named(reader, "authorizers", entries):
        authorizer = _read_authorizer(reader, name, value_node)
        if authorizer is not None:
            found[name] = authorizer
    return found, tuple(entries)


def _read_authorizer(reader: NodeReader, name: str, node: Node) -> Authorizer | None:
    where = f"authorizers.{name}"
    got = fields.read(reader, where, node, AUTHORIZER_FIELDS)
    if got is None:
        return None
    targets = [key for key, field in _TARGETS.items() if field in got]
    if len(targets) != 1:
        found = ", ".join(targets) if targets else "none"
        reader.error(
            node, f"{where}: exactly one of url, function, lambda is required (found: {found})"
        )
        return None
    target = targets[0]
    _only(reader, where, got, _URL_ONLY if target != "url" else _FUNCTION_ONLY, target)
    value, identity = got.get(_TARGETS[target]), got.get(_IDENTITY)
    if value is None or identity is None:
        return None
    # By default, what the identity is read from, and nothing else.
    identified = tuple(
        dict.fromkeys(
            b"cookie" if source.source == "cookie" else source.name.encode("latin-1")
            for source in identity
        )
    )
    forward = got.get(_FORWARD_HEADERS)
    if forward is None:
        forward = identified
    elif got[_TTL] > 0 and not set(forward) <= set(identified):
        # The cache key is the identity alone: an answer that other headers decided would be
        # served to callers who sent other values (docs/authorizers.md, "The cache").
        extra = ", ".join(sorted(n.decode() for n in set(forward) - set(identified)))
        reader.error(
            got.node(_FORWARD_HEADERS) or node,
            f"{where}.forward_headers: {extra} is not in identity; with a ttl, an authorizer may "
            "be sent only what the cache key holds",
        )
        return None
    return Authorizer(
        name=name,
        url=value if target == "url" else None,
        function=value if target == "function" else None,
        lambda_url=value if target == "lambda" else None,
        identity=identity,
        ttl=got[_TTL],
        timeout=got[_TIMEOUT],
        forward_headers=forward,
        upstream_headers=got[_UPSTREAM_HEADERS],
        context_headers=got[_CONTEXT_HEADERS],
        location=reader.location(node),
    )


def _only(reader: NodeReader, where: str, got: Values, wrong: Fields, target: str) -> None:
    """Report the keys of the other kind that ``got`` has."""
    kind = "url authorizers" if target != "url" else "function and lambda authorizers"
    for field in wrong:
        key_node = got.key_node(field)
        if key_node is not None:
            reader.error(key_node, f"{where}.{field.key}: applies only to {kind}")
