"""Backends in the routing table: the field table of each kind (``url``, ``function``,
``lambda``) and the reading of the ``backends`` mapping into
:class:`~proxy.table.model.Backend` values (docs/reference.md, "Backends")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from yaml.nodes import Node

from proxy.table import fields, values
from proxy.table.fields import Field, Fields
from proxy.table.model import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FUNCTION_CONCURRENCY,
    DEFAULT_LAMBDA_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_HEADER_BYTES,
    DEFAULT_MAX_RESPONSE_HEADERS,
    DEFAULT_TIMEOUT,
    DEFAULT_URL_CONCURRENCY,
    Backend,
    Kind,
)
from proxy.table.resilience import read_circuit_breaker
from proxy.table.yamlnodes import NodeReader

MAX_TIMEOUT = 3600.0
#: A tunnel may be quiet for a day at most, if the table says so.
MAX_IDLE_TIMEOUT = 86400.0
#: Bounds of the response-head limits a table may set.
MAX_RESPONSE_HEADERS = 10_000
MAX_RESPONSE_HEADER_BYTES = 1024 * 1024

_FUNCTION_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def read_url(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
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


def read_function_ref(reader: NodeReader, where: str, node: Node, field: Field[str]) -> str | None:
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


#: Where a backend is: exactly one of these keys, which decides its field table.
_TARGETS: Mapping[str, Field[str]] = MappingProxyType(
    {
        "url": Field("url", read_url),
        "function": Field("function", read_function_ref),
        "lambda": Field("lambda", read_url),
    }
)
_KIND = Field("kind", _kind, default=Kind.NEW)
TIMEOUT = Field("timeout", fields.duration, default=DEFAULT_TIMEOUT, minimum=0, maximum=MAX_TIMEOUT)
#: None: the default of the traffic (a stream's or a tunnel's, docs/forwarding.md).
IDLE_TIMEOUT = Field("idle_timeout", fields.duration, minimum=0, maximum=MAX_IDLE_TIMEOUT)
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
            TIMEOUT,
            IDLE_TIMEOUT,
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


def read_backends(reader: NodeReader, node: Node) -> dict[str, Backend]:
    entries = reader.mapping(node, "backends")
    if entries is None:
        return {}
    if not entries:
        reader.error(node, "backends: at least one backend is required")
    backends: dict[str, Backend] = {}
    for name, value_node in values.named(reader, "backends", entries):
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
        timeout=got[TIMEOUT],
        connect_timeout=got[_CONNECT_TIMEOUT],
        max_concurrency=got[_MAX_CONCURRENCY[target]],
        location=reader.location(node),
        circuit_breaker=got.get(_CIRCUIT_BREAKER),
        max_response_headers=got[_MAX_RESPONSE_HEADERS],
        max_response_header_bytes=got[_MAX_RESPONSE_HEADER_BYTES],
        idle_timeout=got.get(IDLE_TIMEOUT),
    )
