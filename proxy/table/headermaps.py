"""A route's ``request_headers`` and ``response_headers`` (docs/routing.md, "Setting and
removing headers"): ``set``, ``add`` and ``remove``, read into :class:`HeaderMap` values and
checked when the table loads. What they may not touch is refused with its location: the
fields that frame and route a request, the hop-by-hop ones, and those the gateway sets itself,
whose values backends and clients must be able to trust."""

from __future__ import annotations

import re

from yaml.nodes import Node

from proxy.headers import HOP_BY_HOP
from proxy.table import fields
from proxy.table.fields import Field
from proxy.table.model import HeaderMap
from proxy.table.values import TOKEN
from proxy.table.yamlnodes import NodeReader

#: Names no header map may set, add or remove.
FORBIDDEN = HOP_BY_HOP | frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"via", b"x-request-id"}
)
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\uffff]*\Z")


def allowed_name(
    reader: NodeReader, where: str, node: Node, name: str, refused: str = "may not be changed"
) -> bytes | None:
    """``name`` lower-case, if a table may name it in a header map, an authorizer's headers or
    its identity (else reported, saying it ``refused``: None)."""
    if not TOKEN.match(name):
        reader.error(node, f"{where}: {name!r} is not a header name")
        return None
    lowered = name.lower().encode("latin-1")
    if lowered in FORBIDDEN or lowered.startswith(b"x-forwarded-"):
        reader.error(
            node,
            f"{where}: {name!r} {refused} (hop-by-hop fields, Host, Content-Length, "
            "Transfer-Encoding, X-Forwarded-*, Via and X-Request-Id are the gateway's)",
        )
        return None
    return lowered


def _pairs(
    reader: NodeReader, where: str, node: Node, field: Field[tuple[tuple[bytes, bytes], ...]]
) -> tuple[tuple[bytes, bytes], ...] | None:
    """``{Name: value}``: literal values, as the header's bytes."""
    entries = reader.mapping(node, where)
    if entries is None:
        return None
    pairs: list[tuple[bytes, bytes]] = []
    for name, (key_node, value_node) in entries.items():
        lowered = allowed_name(reader, where, key_node, name)
        value = reader.string(value_node, f"{where}.{name}")
        if lowered is None or value is None:
            continue
        if not _FIELD_VALUE.match(value) or value != value.strip():
            reader.error(
                value_node,
                f"{where}.{name}: {value!r} is not a header value (no control characters, "
                "no leading or trailing space)",
            )
            continue
        pairs.append((lowered, value.encode("utf-8")))
    return tuple(pairs) if len(pairs) == len(entries) else None


def _names(
    reader: NodeReader, where: str, node: Node, field: Field[frozenset[bytes]]
) -> frozenset[bytes] | None:
    items = reader.sequence(node, where)
    if items is None:
        return None
    names: set[bytes] = set()
    for index, item in enumerate(items):
        name = reader.string(item, f"{where}[{index}]")
        lowered = (
            allowed_name(reader, f"{where}[{index}]", item, name) if name is not None else None
        )
        if lowered is None:
            return None
        names.add(lowered)
    return frozenset(names)


_Pairs = tuple[tuple[bytes, bytes], ...]
_SET: Field[_Pairs] = Field("set", _pairs, default=())
_ADD: Field[_Pairs] = Field("add", _pairs, default=())
_REMOVE: Field[frozenset[bytes]] = Field("remove", _names, default=frozenset())
HEADER_MAP_FIELDS = (_SET, _ADD, _REMOVE)


def read_header_map(
    reader: NodeReader, where: str, node: Node, field: Field[HeaderMap]
) -> HeaderMap | None:
    got = fields.read(reader, where, node, HEADER_MAP_FIELDS)
    if got is None:
        return None
    return HeaderMap(set=got[_SET], add=got[_ADD], remove=got[_REMOVE])
