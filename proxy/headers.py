"""Header hygiene in both directions (docs/forwarding.md): what a backend sees, what a client
gets.

Headers stay a list of byte pairs from end to end, never a dict: repeated fields such as
``Set-Cookie`` must stay separate lines, and values must pass through byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.asgi import RawHeaders
from proxy.clientaddr import Forwarding

#: Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy ones proxies have always dropped).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Replaced by the gateway's own values; what a client sends in them is not trusted.
_REPLACED = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"x-request-id",
    }
)
# The gateway answers "Expect: 100-continue" itself (the server sends the 100 when the body is
# first read), so passing it on would make the backend send a second interim response.
_REQUEST_DROP = HOP_BY_HOP | _REPLACED | {b"expect"}
# From a peer that is not a trusted proxy, Forwarded is a claim like X-Forwarded-For.
_UNTRUSTED_DROP = _REQUEST_DROP | {b"forwarded"}
_RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id"}
#: The client's trace headers, replaced by the gateway's traceparent; its tracestate too when
#: the trace is not the client's (a new one started here).
_TRACE = frozenset({b"traceparent"})
_TRACE_AND_STATE = frozenset({b"traceparent", b"tracestate"})
#: Fields a ``Connection`` option may not remove from a request. RFC 9110 §7.6.1 has a sender
#: nominate only fields meant for the next hop; these never are: what the gateway routes on,
#: frames the body with, adds itself, or what carries the request's meaning and credentials.
#: ``Connection: host`` would otherwise route on one host and reach the backend as another.
NEVER_NOMINATED = frozenset(
    {
        b"host",
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"cookie",
        b"authorization",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"forwarded",
        b"x-real-ip",
        b"x-request-id",
        b"via",
        b"traceparent",
        b"tracestate",
    }
)

_BODYLESS_DROP = _RESPONSE_DROP | {b"content-length"}
#: Connection values that nominate nothing beyond the hop-by-hop fields already removed.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:+/=-]{1,128}\Z")
VIA = b"strangler"


@dataclass(slots=True)
class RequestHead:
    """What the gateway needs from a request's headers, read in one pass."""

    host: bytes | None
    hosts: int
    #: The client's X-Request-Id when it is a usable one, else None (the gateway makes one).
    request_id: str | None
    has_body: bool
    connection_tokens: frozenset[bytes]
    #: The Transfer-Encoding field's value, when the request has one.
    transfer_encoding: bytes | None
    #: How many header fields, and their names and values in bytes.
    count: int
    size: int
    #: The traceparent field when there is exactly one (proxy/tracecontext.py), else None.
    traceparent: bytes | None = None
    #: The first User-Agent, for the access log.
    user_agent: bytes | None = None


def read_head(headers: RawHeaders) -> RequestHead:
    host: bytes | None = None
    hosts = 0
    request_id: bytes | None = None
    has_body = False
    tokens: frozenset[bytes] = frozenset()
    coding: bytes | None = None
    traceparent: bytes | None = None
    traceparents = 0
    agent: bytes | None = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        if name == b"host":
            hosts += 1
            host = value
        elif name == b"x-request-id":
            request_id = value
        elif name == b"content-length":
            has_body = has_body or value.strip() not in (b"0", b"")
        elif name == b"transfer-encoding":
            has_body = True
            coding = value if coding is None else coding + b", " + value
        elif name == b"connection":
            tokens = tokens | _tokens(value)
        elif name == b"traceparent":
            traceparent, traceparents = value, traceparents + 1
        elif name == b"user-agent" and agent is None:
            agent = value
    rid = None
    if request_id is not None and _REQUEST_ID.match(request_id):
        rid = request_id.decode("ascii")
    return RequestHead(
        host,
        hosts,
        rid,
        has_body,
        tokens,
        coding,
        len(headers),
        size,
        traceparent if traceparents == 1 else None,
        agent,
    )


def only_chunked(coding: bytes) -> bool:
    """Whether a request's Transfer-Encoding is ``chunked`` alone (the parser has already
    refused one where chunked is not last)."""
    return all(t.strip().lower() == b"chunked" for t in coding.split(b",") if t.strip())


def _tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def upstream_request_headers(
    headers: RawHeaders,
    head: RequestHead,
    *,
    host: bytes | None,
    request_id: str,
    forwarding: Forwarding,
    scheme: str,
    http_version: str,
    routed: frozenset[bytes] = frozenset(),
    traceparent: bytes | None = None,
    tracestate: bool = True,
    remove: frozenset[bytes] = frozenset(),
) -> RawHeaders:
    """The request's headers as a backend sees them: ``host`` is the Host in its normal form
    (:mod:`proxy.hosts`); ``routed`` names fields the table routes on, which a ``Connection``
    option may not remove either. ``traceparent``, when given, replaces the client's
    (:mod:`proxy.tracecontext`), and the client's ``tracestate`` goes on only with
    ``tracestate``. The client's values of ``remove`` never pass (a route's authorizer's
    identity headers)."""
    drop = _REQUEST_DROP if forwarding.trusted else _UNTRUSTED_DROP
    if remove:
        drop = drop | remove
    if head.connection_tokens:
        drop = drop | (head.connection_tokens - NEVER_NOMINATED - routed)
    if traceparent is not None:
        drop = drop | (_TRACE if tracestate else _TRACE_AND_STATE)
    out: RawHeaders = []
    for name, value in headers:
        # Names with underscores are dropped, as NGINX does by default: CGI-style backends
        # map "_" and "-" to the same variable, so X_Forwarded_For could pose as it.
        if name in drop or b"_" in name:
            continue
        if name == b"host":
            value = host or value
        elif name == b"content-length":
            value = b"%d" % int(value)  # one spelling: "05" is 5
        out.append((name, value))
    if head.hosts == 0 and host is not None:
        out.insert(0, (b"host", host))  # HTTP/1.0 without one: the gateway's address
    out.append((b"x-forwarded-for", forwarding.forwarded_for))
    out.append((b"x-forwarded-proto", forwarding.proto or scheme.encode("latin-1")))
    forwarded_host = forwarding.host or host
    if forwarded_host is not None:
        out.append((b"x-forwarded-host", forwarded_host))
    out.append((b"via", http_version.encode("latin-1") + b" " + VIA))
    out.append((b"x-request-id", request_id.encode("ascii")))
    if traceparent is not None:
        out.append((b"traceparent", traceparent))
    return out


def client_response_headers(headers: RawHeaders, request_id: str, status: int) -> RawHeaders:
    """A backend's response headers as the client gets them: names lower-case, hop-by-hop
    fields and those the backend's Connection names removed, X-Request-Id the request's."""
    # A 204 has no body and a 304's Content-Length describes a body it does not carry; the
    # server would count it against the empty body, so it is left out.
    drop = _RESPONSE_DROP if status not in (204, 304) else _BODYLESS_DROP
    out: RawHeaders = []
    nominated: frozenset[bytes] | None = None
    for name, value in headers:
        name = name.lower()
        if name in drop:
            if name == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                nominated = (nominated or frozenset()) | _tokens(value)
            continue
        out.append((name, value))
    if nominated:
        out = [(name, value) for name, value in out if name not in nominated]
    out.append((b"x-request-id", request_id.encode("ascii")))
    return out


def cookie_value(headers: RawHeaders, name: bytes) -> str | None:
    """The value of cookie ``name`` in the request's Cookie headers, or None."""
    found = cookie_values(headers, name, first=True)
    return found[0] if found else None


def cookie_values(headers: RawHeaders, name: bytes, first: bool = False) -> tuple[str, ...]:
    """Every value of cookie ``name`` in the request's Cookie headers, in order (the first
    only, with ``first``)."""
    prefix = name + b"="
    found: list[str] = []
    for header_name, value in headers:
        if header_name == b"cookie":
            for pair in value.split(b";"):
                pair = pair.strip()
                if pair.startswith(prefix):
                    found.append(pair[len(prefix) :].decode("latin-1"))
                    if first:
                        return tuple(found)
    return tuple(found)


def header_value(headers: RawHeaders, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case), or None."""
    for header_name, value in headers:
        if header_name == name:
            return value.decode("latin-1")
    return None


def header_values(headers: RawHeaders, name: bytes) -> tuple[str, ...]:
    """Every value of header ``name`` (lower-case), in order."""
    return tuple(value.decode("latin-1") for header_name, value in headers if header_name == name)
