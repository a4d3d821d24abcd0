"""The Host header: its syntax, its one normal form, and matching a route's ``host``.

A request's Host is checked once (RFC 9112 §3.2: a request with an invalid Host gets 400) and
normalised once: lower-case, without a trailing dot, the port split off and checked. That one
result is what routes are matched against and what the backend receives, so a spelling the
backend would normalise (``Admin.Test.``, ``admin.test:80``) can never match one route here
and reach the backend as another host. Names are DNS names in ASCII: a client sends an
internationalised name in its ``xn--`` form, and a table's ``host`` written in Unicode is
converted to that form when the table loads (IDNA 2008, UTS #46). See docs/routing.md,
"Hosts".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_PORT = re.compile(rb"[0-9]{1,5}\Z")
MAX_NAME = 253


class BadHost(ValueError):
    """A Host header the gateway refuses (answered 400 ``bad_request``)."""


@dataclass(frozen=True, slots=True)
class Host:
    #: Lower-case, no trailing dot; an IPv6 literal keeps its brackets.
    name: str
    port: int | None
    #: The Host header the backend receives: ``name``, with ``:port`` when one was sent.
    value: bytes


def parse_host(raw: bytes) -> Host:
    """The normal form of a request's Host header value, or :class:`BadHost`."""
    text = raw.decode("latin-1").strip(" \t").lower()
    if not text:
        raise BadHost("the Host header is empty")
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise BadHost("an IPv6 address in Host must be closed with ']'")
        name, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise BadHost(f"{name!r} is not an IPv6 address") from None
        if rest:
            port = _port(rest)
    else:
        name, colon, port_text = text.partition(":")
        if colon:
            port = _port(":" + port_text)
        name = _dns_name(name.removesuffix("."))
    value = name if port is None else f"{name}:{port}"
    return Host(name, port, value.encode("ascii"))


def _port(text: str) -> int | None:
    """``:8080`` as 8080; ``:`` alone as no port (RFC 3986 allows an empty port)."""
    if not text.startswith(":"):
        raise BadHost(f"{text!r} after the address in Host")
    digits = text[1:]
    if not digits:
        return None
    if _PORT.match(digits.encode()) is None:
        raise BadHost(f"bad port {digits!r} in Host")
    port = int(digits)
    if not 0 < port < 65536:
        raise BadHost(f"port {port} in Host is out of range")
    return port


def _dns_name(name: str) -> str:
    if not name:
        raise BadHost("the Host header has no name")
    if len(name) > MAX_NAME:
        raise BadHost(f"the name in Host is longer than {MAX_NAME} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise BadHost(f"{name!r} is not a valid host name")
    return name


def table_host(text: str) -> str:
    """A route's ``match.host`` in normal form (``*.`` kept); ValueError says what is wrong."""
    wildcard = text.startswith("*.")
    name = (text[2:] if wildcard else text).strip().removesuffix(".")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"is not a valid internationalised name ({exc})") from None
    name = name.lower()
    try:
        _dns_name(name)
    except BadHost:
        raise ValueError("is not a host name or '*.domain' (no port, no scheme)") from None
    return f"*.{name}" if wildcard else name


def host_matches(wanted: str, name: str) -> bool:
    """``wanted`` from :func:`table_host`, exact or ``*.suffix``; ``name`` from
    :func:`parse_host`. A wildcard needs at least one label before its suffix."""
    if wanted.startswith("*."):
        suffix = wanted[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == wanted
