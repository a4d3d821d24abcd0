"""Header hygiene both ways (proxy/headers.py): what the gateway reads from a request's head in
one pass, what a backend is sent, what a client gets, and the lookups routing uses. Lists of
byte pairs in, lists of byte pairs out: order, repeats and values are checked byte for byte,
by examples and by properties over arbitrary header lists."""

from __future__ import annotations

from types import EllipsisType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.asgi import RawHeaders
from proxy.clientaddr import Forwarding
from proxy.headers import (
    HOP_BY_HOP,
    NEVER_NOMINATED,
    client_response_headers,
    cookie_value,
    header_value,
    only_chunked,
    read_head,
    upstream_request_headers,
)

PEER = Forwarding("192.0.2.1", b"192.0.2.1")
BEHIND_PROXY = Forwarding(
    "198.51.100.9",
    b"198.51.100.9, 10.0.0.1",
    proto=b"https",
    host=b"public.example",
    trusted=True,
)
#: Fields the gateway replaces with its own, whatever the client sent.
REPLACED = {
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-prefix",
    b"x-request-id",
}


def upstream(
    headers: RawHeaders,
    *,
    host: bytes | EllipsisType | None = ...,
    forwarding: Forwarding = PEER,
    scheme: str = "http",
    http_version: str = "1.1",
    routed: frozenset[bytes] = frozenset(),
) -> RawHeaders:
    head = read_head(headers)
    if host is ...:
        host = b"example.test" if head.hosts else None  # what the gateway computed
    return upstream_request_headers(
        headers,
        head,
        host=host,
        request_id="rid-1",
        forwarding=forwarding,
        scheme=scheme,
        http_version=http_version,
        routed=routed,
    )


# -- read_head --------------------------------------------------------------------------------


def test_read_head_in_one_pass() -> None:
    headers = [
        (b"host", b"example.test"),
        (b"connection", b"Keep-Alive, X-Foo"),
        (b"x-request-id", b"abc-123"),
        (b"transfer-encoding", b"gzip"),
        (b"connection", b" close ,, "),
        (b"transfer-encoding", b"chunked"),
        (b"accept", b"*/*"),
    ]
    head = read_head(headers)
    assert head.host == b"example.test"
    assert head.hosts == 1
    assert head.request_id == "abc-123"
    assert head.has_body
    assert head.transfer_encoding == b"gzip, chunked"
    assert head.connection_tokens == {b"keep-alive", b"x-foo", b"close"}
    assert head.count == 7
    assert head.size == sum(len(name) + len(value) for name, value in headers)


def test_read_head_of_nothing() -> None:
    head = read_head([])
    assert (head.host, head.hosts, head.request_id) == (None, 0, None)
    assert not head.has_body
    assert head.transfer_encoding is None
    assert head.connection_tokens == frozenset()
    assert (head.count, head.size) == (0, 0)


def test_read_head_counts_every_host() -> None:
    head = read_head([(b"host", b"a.test"), (b"accept", b"*/*"), (b"host", b"b.test")])
    assert head.hosts == 2


@pytest.mark.parametrize(
    ("headers", "has_body"),
    [
        ([], False),
        ([(b"content-length", b"0")], False),
        ([(b"content-length", b" 0 ")], False),
        ([(b"content-length", b"")], False),
        ([(b"content-length", b"1")], True),
        ([(b"transfer-encoding", b"chunked")], True),
        ([(b"content-length", b"0"), (b"transfer-encoding", b"chunked")], True),
    ],
)
def test_has_body(headers: RawHeaders, has_body: bool) -> None:
    assert read_head(headers).has_body is has_body


@pytest.mark.parametrize(
    ("value", "request_id"),
    [
        (b"abc-123", "abc-123"),
        (b"A.b_c~d:e+f/g=h-9", "A.b_c~d:e+f/g=h-9"),
        (b"x" * 128, "x" * 128),
        (b"x" * 129, None),
        (b"", None),
        (b"a b", None),
        (b"a\tb", None),
        (b"<script>", None),
        (b"a,b", None),
        (b"caf\xc3\xa9", None),
    ],
)
def test_only_a_usable_request_id_is_taken(value: bytes, request_id: str | None) -> None:
    assert read_head([(b"x-request-id", value)]).request_id == request_id


# -- only_chunked -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "expected"),
    [
        (b"chunked", True),
        (b"Chunked", True),
        (b" chunked , ", True),
        (b"chunked, chunked", True),
        (b"gzip, chunked", False),
        (b"identity", False),
        (b"chunked;q=1", False),
    ],
)
def test_only_chunked(coding: bytes, expected: bool) -> None:
    assert only_chunked(coding) is expected


# -- what a backend is sent -------------------------------------------------------------------

CLIENT_HEADERS: RawHeaders = [
    (b"host", b"Example.TEST:80"),
    (b"user-agent", b"curl/8.0"),
    (b"connection", b"keep-alive, x-secret, host, cookie"),
    (b"x-secret", b"s3cret"),
    (b"keep-alive", b"timeout=5"),
    (b"te", b"trailers"),
    (b"cookie", b"a=1"),
    (b"x_forwarded_for", b"6.6.6.6"),
    (b"x-forwarded-for", b"6.6.6.6"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"evil.test"),
    (b"x-request-id", b"client-chose-this"),
    (b"forwarded", b"for=6.6.6.6"),
    (b"expect", b"100-continue"),
    (b"content-length", b"05"),
    (b"upgrade", b"h2c"),
    (b"proxy-authorization", b"Basic eDp5"),
    (b"proxy-connection", b"keep-alive"),
    (b"trailer", b"x-checksum"),
    (b"transfer-encoding", b"chunked"),
    (b"accept", b"  */*  "),
    (b"accept", b"text/html"),
]


def test_upstream_headers_from_an_untrusted_peer() -> None:
    assert upstream(CLIENT_HEADERS) == [
        (b"host", b"example.test"),
        (b"user-agent", b"curl/8.0"),
        (b"cookie", b"a=1"),
        (b"content-length", b"5"),
        (b"accept", b"  */*  "),
        (b"accept", b"text/html"),
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"example.test"),
        (b"via", b"1.1 strangler"),
        (b"x-request-id", b"rid-1"),
    ]


def test_upstream_headers_behind_a_trusted_proxy() -> None:
    assert upstream(CLIENT_HEADERS, forwarding=BEHIND_PROXY, http_version="1.0") == [
        (b"host", b"example.test"),
        (b"user-agent", b"curl/8.0"),
        (b"cookie", b"a=1"),
        (b"forwarded", b"for=6.6.6.6"),  # the trusted proxy's to pass on
        (b"content-length", b"5"),
        (b"accept", b"  */*  "),
        (b"accept", b"text/html"),
        (b"x-forwarded-for", b"198.51.100.9, 10.0.0.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"public.example"),
        (b"via", b"1.0 strangler"),
        (b"x-request-id", b"rid-1"),
    ]


def test_without_a_normal_host_the_clients_is_sent_and_no_forwarded_host() -> None:
    headers = [(b"host", b"Raw.Host"), (b"accept", b"*/*")]
    assert upstream(headers, host=None, scheme="https") == [
        (b"host", b"Raw.Host"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"https"),
        (b"via", b"1.1 strangler"),
        (b"x-request-id", b"rid-1"),
    ]


def test_a_request_without_host_gets_the_listeners_address_as_host() -> None:
    # HTTP/1.0 without Host: the gateway passes the address the client reached.
    out = upstream([(b"accept", b"*/*")], host=b"10.0.0.5:8080")
    assert out[:2] == [(b"host", b"10.0.0.5:8080"), (b"accept", b"*/*")]
    assert [name for name, _ in out].count(b"host") == 1
    assert (b"x-forwarded-host", b"10.0.0.5:8080") in out
    assert b"host" not in [name for name, _ in upstream([(b"accept", b"*/*")])]


def test_connection_may_not_nominate_what_is_routed_on() -> None:
    headers = [
        (b"connection", b"x-tenant, x-other, authorization, traceparent"),
        (b"x-tenant", b"t1"),
        (b"x-other", b"o"),
        (b"authorization", b"Bearer t"),
        (b"traceparent", b"00-abc-def-01"),
    ]
    out = upstream(headers, routed=frozenset({b"x-tenant"}))
    assert out[:3] == [
        (b"x-tenant", b"t1"),
        (b"authorization", b"Bearer t"),
        (b"traceparent", b"00-abc-def-01"),
    ]
    assert b"x-other" not in [name for name, _ in out]


def test_connection_nominating_a_hop_by_hop_field_removes_it_anyway() -> None:
    out = upstream([(b"connection", b"upgrade"), (b"upgrade", b"websocket"), (b"a", b"1")])
    assert out[0] == (b"a", b"1")
    assert not {b"connection", b"upgrade"} & {name for name, _ in out}


@pytest.mark.parametrize(("sent", "spelled"), [(b"0", b"0"), (b"007", b"7"), (b"12345", b"12345")])
def test_content_length_has_one_spelling(sent: bytes, spelled: bytes) -> None:
    assert upstream([(b"content-length", sent)])[0] == (b"content-length", spelled)


# -- what a client gets -----------------------------------------------------------------------

BACKEND_HEADERS: RawHeaders = [
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"X-Internal", b"debug"),
    (b"Connection", b"close, X-Internal"),
    (b"Keep-Alive", b"timeout=5"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Set-Cookie", b"a=1; Path=/"),
    (b"Set-Cookie", b"b=2"),
    (b"X-Request-Id", b"backend-made-this"),
    (b"Content-Length", b"10"),
    (b"Trailer", b"x-checksum"),
    (b"Upgrade", b"h2c"),
    (b"Proxy-Authenticate", b"Basic"),
    (b"ETag", b'"v1"'),
]


def test_client_response_headers() -> None:
    assert client_response_headers(BACKEND_HEADERS, "rid-1", 200) == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"10"),
        (b"etag", b'"v1"'),
        (b"x-request-id", b"rid-1"),
    ]


@pytest.mark.parametrize("status", [204, 304])
def test_content_length_is_dropped_for_204_and_304(status: int) -> None:
    assert client_response_headers(BACKEND_HEADERS, "rid-1", status) == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2"),
        (b"etag", b'"v1"'),
        (b"x-request-id", b"rid-1"),
    ]


@pytest.mark.parametrize("value", [b"keep-alive", b"Keep-Alive", b"close", b"upgrade"])
def test_a_plain_connection_value_nominates_nothing(value: bytes) -> None:
    headers = [(b"Connection", value), (b"X-A", b"1")]
    assert client_response_headers(headers, "r", 200) == [(b"x-a", b"1"), (b"x-request-id", b"r")]


def test_nominations_from_every_connection_field_count() -> None:
    headers = [
        (b"x-one", b"1"),
        (b"connection", b"x-one"),
        (b"x-two", b"2"),
        (b"x-three", b"3"),
        (b"connection", b"keep-alive, X-Two"),
    ]
    assert client_response_headers(headers, "r", 200) == [
        (b"x-three", b"3"),
        (b"x-request-id", b"r"),
    ]


# -- lookups ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "name", "expected"),
    [
        ([(b"cookie", b"a=1; sid=abc; b=2")], b"sid", "abc"),
        ([(b"cookie", b"xsid=1; sid=2")], b"sid", "2"),
        ([(b"cookie", b"sidx=1")], b"sid", None),
        ([(b"cookie", b"a=1"), (b"cookie", b"sid=second")], b"sid", "second"),
        ([(b"cookie", b"sid=a=b")], b"sid", "a=b"),
        ([(b"cookie", b"sid=")], b"sid", ""),
        ([(b"cookie", b"sid=caf\xe9")], b"sid", "caf\xe9"),
        ([(b"x-cookie", b"sid=1")], b"sid", None),
        ([], b"sid", None),
    ],
)
def test_cookie_value(headers: RawHeaders, name: bytes, expected: str | None) -> None:
    assert cookie_value(headers, name) == expected


def test_header_value_is_the_first() -> None:
    headers = [(b"x-a", b"first"), (b"x-a", b"second"), (b"x-b", b"\xe9")]
    assert header_value(headers, b"x-a") == "first"
    assert header_value(headers, b"x-b") == "\xe9"
    assert header_value(headers, b"x-c") is None


# -- properties over arbitrary header lists ---------------------------------------------------

_TOKEN_NAMES = st.from_regex(rb"\A[a-z][a-z0-9_-]{0,10}\Z", fullmatch=True)
_NOTABLE_NAMES = st.sampled_from(
    sorted(
        HOP_BY_HOP
        | NEVER_NOMINATED
        | {b"expect", b"accept", b"x-tenant", b"x-secret", b"x_real_ip", b"set-cookie"}
    )
)
NAMES = st.one_of(_NOTABLE_NAMES, _TOKEN_NAMES)
VALUES = st.from_regex(rb"\A[\x21-\x7e][\x20-\x7e\t]{0,15}\Z", fullmatch=True) | st.just(b"")
_CASES = st.sampled_from([bytes.lower, bytes.upper, bytes.title])
_CONNECTION_TOKENS = st.one_of(NAMES, st.sampled_from([b"close", b"keep-alive", b"upgrade"]))
CONNECTION_VALUES = st.lists(
    st.tuples(_CONNECTION_TOKENS, _CASES).map(lambda pair: pair[1](pair[0])), max_size=4
).map(lambda tokens: b", ".join(tokens))


@st.composite
def fields(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name = draw(NAMES)
    if name == b"content-length":  # digits, perhaps with leading zeros
        return name, b"%0*d" % (draw(st.integers(1, 4)), draw(st.integers(0, 10**12)))
    if name == b"connection":
        return name, draw(CONNECTION_VALUES)
    return name, draw(VALUES)


HEADER_LISTS = st.lists(fields(), max_size=12)


@given(
    headers=HEADER_LISTS,
    trusted=st.booleans(),
    routed=st.frozensets(NAMES, max_size=3),
    host=st.sampled_from([None, b"normal.test"]),
)
def test_upstream_headers_keep_exactly_the_end_to_end_fields_in_order(
    headers: RawHeaders, trusted: bool, routed: frozenset[bytes], host: bytes | None
) -> None:
    forwarding = BEHIND_PROXY if trusted else PEER
    out = upstream(headers, host=host, forwarding=forwarding, routed=routed)
    tail = 5 if (forwarding.host or host) else 4  # X-Forwarded-Host when there is one
    kept, added = out[:-tail], out[-tail:]

    tokens = read_head(headers).connection_tokens
    protected = NEVER_NOMINATED | routed
    for name, _ in kept:
        assert name not in HOP_BY_HOP
        assert name not in tokens or name in protected, f"{name!r} was nominated"
        assert name not in REPLACED
        assert b"_" not in name
        assert trusted or name != b"forwarded"

    # Every other field is passed on, in order, with its exact value (Host in its normal form,
    # Content-Length in its one spelling).
    survivors = []
    for name, value in headers:
        if (
            name in HOP_BY_HOP
            or (name in tokens and name not in protected)
            or name in REPLACED
            or name == b"expect"
            or b"_" in name
            or (name == b"forwarded" and not trusted)
        ):
            continue
        if name == b"host" and host is not None:
            value = host
        elif name == b"content-length":
            value = str(int(value)).encode()
        survivors.append((name, value))
    if host is not None and b"host" not in [name for name, _ in headers]:
        survivors.insert(0, (b"host", host))  # HTTP/1.0 without Host: the gateway's address
    assert kept == survivors

    names = [name for name, _ in added]
    assert names[:2] == [b"x-forwarded-for", b"x-forwarded-proto"]
    assert names[-2:] == [b"via", b"x-request-id"]
    assert added[-1] == (b"x-request-id", b"rid-1")


@st.composite
def backend_fields(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name, value = draw(fields())
    return draw(_CASES)(name), value


@given(headers=st.lists(backend_fields(), max_size=12), status=st.sampled_from([200, 204, 304]))
def test_client_headers_never_keep_what_the_backends_connection_nominates(
    headers: RawHeaders, status: int
) -> None:
    out = client_response_headers(headers, "rid-1", status)
    assert out[-1] == (b"x-request-id", b"rid-1")
    kept = out[:-1]
    nominated: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection" and value.lower() not in {
            b"close",
            b"keep-alive",
            b"upgrade",
        }:
            nominated |= {token.strip().lower() for token in value.split(b",") if token.strip()}
    dropped = HOP_BY_HOP | nominated | {b"x-request-id"}
    if status in (204, 304):
        dropped |= {b"content-length"}
    for name, _ in kept:
        assert name == name.lower()
        assert name not in dropped
    assert kept == [(name.lower(), value) for name, value in headers if name.lower() not in dropped]


def test_read_head_keeps_one_traceparent_and_the_first_user_agent() -> None:
    one = read_head([(b"traceparent", b"00-a-b-01"), (b"user-agent", b"a"), (b"user-agent", b"b")])
    assert (one.traceparent, one.user_agent) == (b"00-a-b-01", b"a")
    # Two traceparents are no trace to continue: none is kept (a new trace starts).
    two = read_head([(b"traceparent", b"00-a-b-01"), (b"traceparent", b"00-c-d-01")])
    assert (two.traceparent, two.user_agent) == (None, None)
