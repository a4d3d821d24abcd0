"""The table's ``authorizers`` and a route's ``authorizer``/``optional`` (proxy/table/
authorizers.py, proxy/table/routing.py): what is read, the defaults, and every mistake with its
FILE:LINE:COL."""

from __future__ import annotations

import textwrap

import pytest

from proxy.table.loader import TableError, parse_table
from proxy.table.model import IdentitySource


def table(authorizers: str, route_extra: str = "authorizer: a") -> str:
    return (
        "version: 1\n"
        "backends:\n"
        "  app: {url: 'http://127.0.0.1:1'}\n"
        "authorizers:\n"
        + textwrap.indent(textwrap.dedent(authorizers), "  ")
        + "routes:\n"
        + f"  - {{name: r, match: {{path: /}}, backend: app, {route_extra}}}\n"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(TableError) as caught:
        parse_table(text.encode(), "t.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_url_authorizer_is_read_with_its_defaults() -> None:
    parsed = parse_table(
        table(
            "a:\n  url: http://h:8081/session/whoami\n  identity: [cookie:sid, header:X-Key]\n"
        ).encode(),
        "t.yaml",
    )
    authorizer = parsed.authorizers["a"]
    assert authorizer.url == "http://h:8081/session/whoami"
    assert authorizer.identity == (
        IdentitySource("cookie", "sid"),
        IdentitySource("header", "x-key"),
    )
    assert (authorizer.ttl, authorizer.timeout) == (0.0, 2.0)
    # By default it is sent what the identity is read from, and nothing else.
    assert authorizer.forward_headers == (b"cookie", b"x-key")
    assert authorizer.upstream_headers == ()
    route = parsed.routes[0]
    assert (route.authorizer, route.authorizer_optional) == ("a", False)


def test_a_function_authorizer_maps_its_context_to_headers() -> None:
    parsed = parse_table(
        table(
            "a:\n  function: tests.functions:authorize\n  identity: [header:Authorization]\n"
            "  ttl: 5m\n  timeout: 500ms\n  context_headers: {sub: X-User-Id}\n"
        ).encode(),
        "t.yaml",
    )
    authorizer = parsed.authorizers["a"]
    assert (authorizer.function, authorizer.ttl, authorizer.timeout) == (
        "tests.functions:authorize", 300.0, 0.5,
    )  # fmt: skip
    assert authorizer.context_headers == (("sub", b"x-user-id"),)
    assert authorizer.identity_headers == frozenset({b"x-user-id"})


@pytest.mark.parametrize(
    ("authorizers", "route", "expected"),
    [
        (
            "a:\n  identity: [cookie:sid]\n",
            "authorizer: a",
            "t.yaml:6:5: authorizers.a: exactly one of url, function, lambda is required "
            "(found: none)",
        ),
        (
            "a:\n  url: http://h/x\n",
            "authorizer: a",
            "t.yaml:6:5: authorizers.a: missing required key 'identity'",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [session]\n",
            "authorizer: a",
            "t.yaml:7:16: authorizers.a.identity[0]: 'session' is not cookie:NAME or header:NAME",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s, cookie:s]\n",
            "authorizer: a",
            "t.yaml:7:26: authorizers.a.identity[1]: 'cookie:s' is listed twice",
        ),
        (
            "a:\n  url: http://h/x\n  identity: []\n",
            "authorizer: a",
            "t.yaml:7:15: authorizers.a.identity: list at least one cookie:NAME or header:NAME",
        ),
        (
            "a:\n  url: http://h/x?next=1\n  identity: [cookie:s]\n",
            "authorizer: a",
            "t.yaml:6:10: authorizers.a.url: 'http://h/x?next=1': a backend URL takes no query "
            "string or fragment",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n  ttl: 2h\n",
            "authorizer: a",
            "t.yaml:8:10: authorizers.a.ttl: duration '2h' is out of range "
            "(0 (off), at most 3600s)",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n"
            "  upstream_headers: [X-Forwarded-User]\n",
            "authorizer: a",
            "t.yaml:8:24: authorizers.a.upstream_headers[0]: 'X-Forwarded-User' may not be changed "
            "(hop-by-hop fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and "
            "X-Request-Id are the gateway's)",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n  forward_headers: [Connection]\n",
            "authorizer: a",
            "t.yaml:8:23: authorizers.a.forward_headers[0]: 'Connection' is never forwarded "
            "(hop-by-hop fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and "
            "X-Request-Id are the gateway's)",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n  forward_headers: ['\u2713']\n",
            "authorizer: a",
            "t.yaml:8:23: authorizers.a.forward_headers[0]: '\u2713' is not a header name",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [header:Host]\n",
            "authorizer: a",
            "t.yaml:7:16: authorizers.a.identity[0]: 'Host' cannot identify a caller (hop-by-hop "
            "fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and X-Request-Id "
            "are the gateway's)",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n  ttl: 30s\n"
            "  forward_headers: [Cookie, X-Tenant]\n",
            "authorizer: a",
            "t.yaml:9:22: authorizers.a.forward_headers: x-tenant is not in identity; with a ttl, "
            "an authorizer may be sent only what the cache key holds",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n  context_headers: {sub: X-User}\n",
            "authorizer: a",
            "t.yaml:8:5: authorizers.a.context_headers: applies only to function and lambda "
            "authorizers",
        ),
        (
            "a:\n  function: tests.functions:authorize\n  identity: [cookie:s]\n"
            "  upstream_headers: [X-User]\n",
            "authorizer: a",
            "t.yaml:8:5: authorizers.a.upstream_headers: applies only to url authorizers",
        ),
        (
            "a:\n  function: tests.functions:authorize\n  identity: [cookie:s]\n"
            "  context_headers: {sub: X-User, id: x-user}\n",
            "authorizer: a",
            "t.yaml:8:40: authorizers.a.context_headers.id: header 'x-user' is already mapped",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n",
            "authorizer: b",
            "t.yaml:9:59: routes[0] (r).authorizer: unknown authorizer 'b' (known: a)",
        ),
        (
            "a:\n  url: http://h/x\n  identity: [cookie:s]\n",
            "optional: true",
            "t.yaml:9:47: routes[0] (r).optional: applies only to a route with an authorizer",
        ),
        (
            "Bad:\n  url: http://h/x\n  identity: [cookie:s]\n",
            "optional: false",
            "t.yaml:5:3: authorizers: bad name 'Bad' (1-63 of a-z, 0-9, '_', '-')",
        ),
    ],
)
def test_every_mistake_is_reported_where_it_is(authorizers: str, route: str, expected: str) -> None:
    found = problems(table(authorizers, route))
    assert expected in found, found


def test_a_route_naming_an_invalid_authorizer_is_not_also_told_it_is_unknown() -> None:
    found = problems(table("a:\n  url: http://h/x\n"))
    assert found == ["t.yaml:6:5: authorizers.a: missing required key 'identity'"]
