"""Path normalisation and route precedence (docs/routing.md), with property tests."""

from __future__ import annotations

import textwrap
import urllib.parse

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.matching import (
    BadPath,
    compile_pattern,
    match_segments,
    normalise_path,
    normalise_slowly,
)
from proxy.routes import CompiledTable, compile_table
from proxy.table.loader import parse_table
from proxy.table.model import Backend as BackendSpec


class FakeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.name, self.kind, self.spec = spec.name, spec.kind, spec

    async def call(self, request: object) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def table(routes: str) -> CompiledTable:
    text = "version: 1\nbackends: {a: {url: 'http://a'}, b: {url: 'http://b'}}\nroutes:\n"
    text += textwrap.indent(textwrap.dedent(routes), "  ")
    return compile_table(parse_table(text.encode(), "t.yaml"), FakeBackend)


def route_for(
    compiled: CompiledTable,
    path: str,
    method: str = "GET",
    host: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> str | None:
    found = compiled.router.match(
        method, match_segments(normalise_path(path.encode())), host, headers or []
    )
    return found[0].name if found else None


NORMALISED = [
    (b"/", "/"),
    (b"/a/b", "/a/b"),
    (b"//a///b", "/a/b"),
    (b"/a/./b/../c", "/a/c"),
    (b"/a/%2E%2E/b", "/b"),
    (b"/a/%2e/b", "/a/b"),
    (b"/../../a", "/a"),
    (b"/a/..", "/"),
    (b"/a/b/..", "/a/"),
    (b"/a/b/.", "/a/b/"),
    (b"/a/", "/a/"),
    (b"/%7Euser/%41%2d", "/~user/A-"),
    (b"/caf%c3%a9", "/caf%C3%A9"),
    (b"/caf\xc3\xa9", "/caf%C3%A9"),
    (b'/a"b<c>', "/a%22b%3Cc%3E"),
    (b"/a;jsessionid=1/b", "/a;jsessionid=1/b"),
    (b"/a%3bb", "/a%3Bb"),
    (b"/%252e%252e/admin", "/%252e%252e/admin"),
    (b"/a/...", "/a/..."),
    (b"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_normalise_path(raw: bytes, expected: str) -> None:
    assert normalise_path(raw) == expected


REFUSED = [
    (b"/a%2Fb", "encoded '/' or '\\' in the path is not allowed"),
    (b"/a%2fb", "encoded '/' or '\\' in the path is not allowed"),
    (b"/a%5Cb", "encoded '/' or '\\' in the path is not allowed"),
    (b"/a\\b", "'\\' in the path is not allowed"),
    (b"/a%00", "encoded control characters in the path are not allowed"),
    (b"/a%0d%0aX-Injected:1", "encoded control characters in the path are not allowed"),
    (b"/a\x00", "control characters in the path are not allowed"),
    (b"/..;/admin", "an empty or dot segment with ';' parameters is not allowed"),
    (b"/a/.;x/b", "an empty or dot segment with ';' parameters is not allowed"),
    (b"/a/%2e%2e;/b", "an empty or dot segment with ';' parameters is not allowed"),
    (b"/;x=1/auth", "an empty or dot segment with ';' parameters is not allowed"),
    (b"/%zz", "'%' must be followed by two hex digits"),
    (b"/a%2", "'%' must be followed by two hex digits"),
    (b"*", "the request target must be a path starting with '/'"),
    (b"http://evil/a", "the request target must be a path starting with '/'"),
    (b"", "the request target must be a path starting with '/'"),
]


@pytest.mark.parametrize(("raw", "message"), REFUSED)
def test_refused_paths(raw: bytes, message: str) -> None:
    with pytest.raises(BadPath) as caught:
        normalise_path(raw)
    assert str(caught.value) == message


def test_match_segments_drop_parameters_and_keep_trailing_slash() -> None:
    assert match_segments("/") == ()
    assert match_segments("/a") == ("a",)
    assert match_segments("/a/") == ("a", "")
    assert match_segments("/a;jsessionid=1/b;v=2") == ("a", "b")


PRECEDENCE = """\
- {name: root, match: {path: /}, backend: a}
- {name: auth, match: {path: /auth}, backend: a}
- {name: auth-admin, match: {path: /auth/admin}, backend: b}
- {name: products, match: {path: /products}, backend: a}
- {name: product, match: {path: "/products/{id}"}, backend: b}
- {name: featured, match: {path: /products/featured}, backend: b}
- {name: files, match: {path: "/files/{rest+}"}, backend: b}
- {name: file-meta, match: {path: "/files/{name}"}, backend: a}
- {name: review, match: {path: "/products/{id}/reviews/{rid}"}, backend: a}
"""


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/", "root"),
        ("/anything/else", "root"),
        ("/auth", "auth"),
        ("/auth/", "auth"),
        ("/auth/login", "auth"),
        ("/authx", "root"),
        ("/auth;jsessionid=1/login", "auth"),
        ("/auth/admin", "auth-admin"),
        ("/auth/admin/users", "auth-admin"),
        ("/auth/administrator", "auth"),
        ("/products", "products"),
        ("/products/", "products"),
        ("/products/7", "product"),
        ("/products/7/", "products"),
        ("/products/featured", "featured"),
        ("/products/7/reviews", "products"),
        ("/products/7/reviews/3", "review"),
        ("/Products/7", "root"),
        ("/files/a", "file-meta"),
        ("/files/a/b/c", "files"),
        ("/files", "root"),
        ("/files/", "root"),
        ("/auth/../products/7", "product"),
        ("/auth/%2e%2e/products/featured", "featured"),
    ],
)
def test_most_specific_route_wins(path: str, route: str) -> None:
    assert route_for(table(PRECEDENCE), path) == route


def test_captures_reach_the_match() -> None:
    compiled = table(PRECEDENCE)
    found = compiled.router.match("GET", match_segments("/products/7/reviews/x%20y"), None, [])
    assert found is not None
    assert found[1] == {"id": "7", "rid": "x%20y"}
    found = compiled.router.match("GET", match_segments("/files/a/b;v=1/c/"), None, [])
    assert found is not None
    assert found[1] == {"rest": "a/b/c/"}


CONDITIONS = """\
- {name: plain, match: {path: /api}, backend: a}
- {name: reads, match: {path: /api, methods: [GET, HEAD]}, backend: b}
- {name: canary, match: {path: /api, methods: [GET], headers: {X-Canary: "1"}}, backend: b}
- {name: tenant, match: {path: /api, host: "*.example.com"}, backend: b}
- {name: exact-host, match: {path: /api, host: "api.example.org"}, backend: b}
- {name: later-twin, match: {path: /api, host: "*.example.com"}, backend: a}
"""


@pytest.mark.parametrize(
    ("method", "host", "headers", "route"),
    [
        ("POST", None, [], "plain"),
        ("GET", None, [], "reads"),
        ("HEAD", None, [], "reads"),
        ("get", None, [], "plain"),
        ("GET", None, [(b"x-canary", b"1")], "canary"),
        ("GET", None, [(b"x-canary", b"2")], "reads"),
        ("GET", None, [(b"x-canary", b"2"), (b"x-canary", b"1")], "canary"),
        ("POST", "shop.example.com", [], "tenant"),
        ("POST", "a.b.example.com", [], "tenant"),
        ("POST", "example.com", [], "plain"),
        ("POST", "badexample.com", [], "plain"),
        ("POST", "api.example.org", [], "exact-host"),
        ("POST", "api.example.org.evil", [], "plain"),
    ],
)
def test_conditions_and_tie_breaks(
    method: str, host: str | None, headers: list[tuple[bytes, bytes]], route: str
) -> None:
    assert route_for(table(CONDITIONS), "/api/x", method, host, headers) == route


def test_more_conditions_beat_fewer_then_file_order() -> None:
    order = [route.name for route in table(CONDITIONS).router.routes]
    # canary has two conditions; the one-condition routes keep their file order.
    assert order == ["canary", "reads", "tenant", "exact-host", "later-twin", "plain"]


def test_no_route_when_nothing_matches() -> None:
    compiled = table("- {name: only, match: {path: /only}, backend: a}\n")
    assert route_for(compiled, "/other") is None
    assert route_for(compiled, "/only/x") == "only"


# ---- properties -------------------------------------------------------------------------------

_PIECES = [
    "a",
    "b",
    "auth",
    "admin",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ";x=1",
    "%41",
    "%3B",
    "~",
    "%7e",
    "",
    "%25",
    "%C3%A9",
    "\u00e9",
    "@",
    "..;",
]
raw_paths = st.lists(st.sampled_from(_PIECES), max_size=8).map(
    lambda parts: ("/" + "/".join(parts)).encode("utf-8")
)


@given(raw_paths)
def test_normalisation_is_idempotent(raw: bytes) -> None:
    try:
        once = normalise_path(raw)
    except BadPath:
        return
    assert normalise_path(once.encode()) == once


@given(st.binary(max_size=40).map(lambda b: b"/" + b))
def test_normalisation_is_idempotent_on_any_bytes(raw: bytes) -> None:
    try:
        once = normalise_path(raw)
    except BadPath:
        return
    assert once.isascii()
    assert "//" not in once
    assert all(seg not in (".", "..") for seg in once.split("/"))
    assert normalise_path(once.encode()) == once


@given(raw_paths, st.sampled_from(["/", "/auth", "/auth/admin", "/a/b", "/%C3%A9"]))
def test_a_prefix_route_never_matches_outside_its_prefix(raw: bytes, prefix: str) -> None:
    try:
        path = normalise_path(raw)
    except BadPath:
        return
    pattern = compile_pattern(prefix)
    view = "/" + "/".join(match_segments(path))
    if pattern.match(match_segments(path)) is not None:
        assert prefix == "/" or view == prefix or view.startswith(prefix + "/")


def backend_resolution(path: str) -> str:
    """How a servlet container reads a forwarded path (the strictest common reading): drop `;`
    parameters from each raw segment, then decode every escape, then resolve dot segments
    (Tomcat and Spring strip parameters before decoding)."""
    raw_segments = [segment.split(";", 1)[0] for segment in path.split("/")[1:]]
    segments = [urllib.parse.unquote(segment) for segment in raw_segments]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    trailing = bool(out) and segments[-1] in ("", ".", "..")
    return "/" + "/".join(out) + ("/" if trailing else "")


@given(raw_paths)
def test_the_backend_resolves_the_forwarded_path_to_the_same_route(raw: bytes) -> None:
    compiled = table(PRECEDENCE)
    try:
        path = normalise_path(raw)
    except BadPath:
        return
    resolved = backend_resolution(path)
    assume("%" not in resolved and ";" not in resolved)
    gateway_route = compiled.router.match("GET", match_segments(path), None, [])
    backend_route = compiled.router.match(
        "GET", match_segments(normalise_path(resolved.encode())), None, []
    )
    assert gateway_route is not None
    assert backend_route is not None
    assert gateway_route[0].name == backend_route[0].name


@given(
    st.lists(st.text("abcXYZ019-._~!$&'()*+,=:@", min_size=1, max_size=6), max_size=6).map(
        lambda segments: "/" + "/".join(segments)
    ),
    st.booleans(),
)
def test_the_fast_path_gives_what_the_full_algorithm_gives(path: str, slash: bool) -> None:
    raw = (path + ("/" if slash and path != "/" else "")).encode()
    try:
        slow = normalise_slowly(raw)
    except BadPath:
        with pytest.raises(BadPath):
            normalise_path(raw)
        return
    assert normalise_path(raw) == slow
