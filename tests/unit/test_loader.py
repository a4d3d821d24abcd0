"""The routing-table loader: every kind of broken file gives its exact FILE:LINE:COL error."""

from __future__ import annotations

import codecs
import textwrap
from pathlib import Path

import pytest

from proxy.table.loader import (
    MAX_DEPTH,
    MAX_TABLE_BYTES,
    TableError,
    load_table,
    parse_table,
    read_yaml,
    read_yaml_file,
)
from proxy.table.model import CircuitBreaker, Kind, Retries, Shadow

GOOD = """\
version: 1
backends:
  monolith:
    url: http://127.0.0.1:8081
    kind: legacy
  catalog:
    url: http://127.0.0.1:9000/v1
    timeout: 1m30s
    connect_timeout: 250ms
routes:
  - name: everything-else
    match: { path: / }
    backend: monolith
  - name: catalog
    match: { path: /products, methods: [GET, HEAD], host: "*.Example.com",
             headers: { X-Canary: "1" } }
    split: { catalog: 33.33, monolith: 66.67 }
    sticky: { cookie: session_id, set: true }
"""


def test_failure_containment_keys_are_read_with_their_defaults() -> None:
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends:
              m: {url: "http://m", kind: legacy}
              a:
                url: "http://a"
                circuit_breaker: {failure_ratio: 0.25, window: 30s, open_for: 1m, probes: 3}
              b: {url: "http://b", circuit_breaker: {}}
            routes:
              - name: r1
                match: {path: /1}
                backend: a
                fallback: {backend: m, statuses: [503, 502, 503]}
                retries: {attempts: 2, retry_on: [timeout], statuses: [504],
                          budget: {ratio: 0.5, min_per_second: 0}}
              - {name: r2, match: {path: /2}, backend: b, fallback: m, retries: {attempts: 1}}
            """
        ).encode(),
        "t.yaml",
    )
    a, b = table.backends["a"].circuit_breaker, table.backends["b"].circuit_breaker
    assert a == CircuitBreaker(0.25, 20, 30.0, 60.0, 3)
    assert b == CircuitBreaker(0.5, 20, 10.0, 30.0, 1)
    assert table.backends["m"].circuit_breaker is None
    r1, r2 = table.routes
    assert (r1.fallback, r1.fallback_statuses) == ("m", frozenset({502, 503}))
    assert r1.retries == Retries(2, frozenset({"timeout"}), frozenset({504}), 0.5, 0.0)
    assert (r2.fallback, r2.fallback_statuses) == ("m", frozenset())
    assert r2.retries == Retries(1, frozenset({"connect_failure", "reset"}), frozenset(), 0.2, 10.0)


def test_shadow_is_read_with_its_defaults() -> None:
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends: {m: {url: "http://m"}, n: {url: "http://n"}}
            routes:
              - {name: r1, match: {path: /1}, backend: m, shadow: {backend: n}}
              - name: r2
                match: {path: /2}
                backend: m
                shadow:
                  backend: n
                  percent: 12.5
                  methods: [GET, POST]
                  headers: [Content-Type, ETag]
                  ignore: ["$.generated_at", "$.items[*].id", "$..updated"]
                  learn_noise: true
                  max_body: 4096
                  timeout: 2s
            """
        ).encode(),
        "t.yaml",
    )
    r1, r2 = table.routes
    assert r1.shadow == Shadow(
        "n",
        10_000,
        frozenset({"GET", "HEAD", "OPTIONS"}),
        ("content-type",),
        (),
        False,
        262_144,
        10.0,
    )
    assert r2.shadow == Shadow(
        "n",
        1250,
        frozenset({"GET", "POST"}),
        ("content-type", "etag"),
        ("$.generated_at", "$.items[*].id", "$..updated"),
        True,
        4096,
        2.0,
    )


def test_zero_is_kept_wherever_zero_is_allowed() -> None:
    # `max_body: 0` used to pass validation and silently become 262144 (`x or default`).
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends: {m: {url: "http://m"}, n: {url: "http://n"}}
            routes:
              - name: r
                match: {path: /}
                split: {m: 100, n: 0}
                shadow: {backend: n, percent: 0, max_body: 0}
                retries: {attempts: 1, retry_on: [], budget: {ratio: 0, min_per_second: 0}}
            """
        ).encode(),
        "t.yaml",
    )
    (route,) = table.routes
    assert route.split == (("m", 10_000), ("n", 0))
    assert route.shadow is not None
    assert (route.shadow.percent, route.shadow.max_body) == (0, 0)
    assert route.retries == Retries(1, frozenset(), frozenset(), 0.0, 0.0)


def test_timeouts_of_backends_and_routes_take_zero_as_off() -> None:
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends:
              m: {url: "http://m"}
              s: {url: "http://s", timeout: 0, idle_timeout: 0s}
              t: {url: "http://t", timeout: 0s, idle_timeout: 10m}
            routes:
              - {name: plain, match: {path: /}, backend: m}
              - {name: events, match: {path: /events}, backend: m, timeout: 0, idle_timeout: 2m}
              - {name: quick, match: {path: /quick}, backend: s, timeout: 1s, idle_timeout: 0}
            """
        ).encode(),
        "t.yaml",
    )
    m, s, t = (table.backends[name] for name in "mst")
    assert (m.timeout, m.idle_timeout) == (30.0, None)
    assert (s.timeout, s.idle_timeout) == (0.0, 0.0)
    assert (t.timeout, t.idle_timeout) == (0.0, 600.0)
    plain, events, quick = table.routes
    assert (plain.timeout, plain.idle_timeout) == (None, None)
    assert (events.timeout, events.idle_timeout) == (0.0, 120.0)
    assert (quick.timeout, quick.idle_timeout) == (1.0, 0.0)


def test_zero_is_refused_where_a_duration_must_be_more_than_zero() -> None:
    assert problems(
        """\
        version: 1
        backends: {m: {url: "http://m", connect_timeout: 0, timeout: -1s, idle_timeout: 2d}}
        routes: [{name: r, match: {path: /}, backend: m, timeout: 2h, idle_timeout: 0ms5}]
        """
    ) == [
        "t.yaml:2:50: backends.m.connect_timeout: expected a duration with a unit ('250ms', "
        "'3s', '1m'), got an integer",
        "t.yaml:2:62: backends.m.timeout: bad duration '-1s' (a number with a unit: ms, s, m "
        "or h, e.g. '250ms', '3s', '1m30s', or 0)",
        "t.yaml:2:81: backends.m.idle_timeout: bad duration '2d' (a number with a unit: ms, s, "
        "m or h, e.g. '250ms', '3s', '1m30s', or 0)",
        "t.yaml:3:59: routes[0] (r).timeout: duration '2h' is out of range (0 (off), at most "
        "3600s)",
        "t.yaml:3:77: routes[0] (r).idle_timeout: bad duration '0ms5' (a number with a unit: "
        "ms, s, m or h, e.g. '250ms', '3s', '1m30s', or 0)",
    ]


def problems(text: str) -> list[str]:
    with pytest.raises(TableError) as caught:
        parse_table(textwrap.dedent(text).encode(), "t.yaml")
    return [str(p) for p in caught.value.problems]


def test_good_table_is_read_into_the_model() -> None:
    table = parse_table(GOOD.encode(), "t.yaml")
    assert table.version == 1
    assert list(table.backends) == ["monolith", "catalog"]
    monolith, catalog = table.backends["monolith"], table.backends["catalog"]
    assert (monolith.kind, monolith.timeout, monolith.connect_timeout) == (Kind.LEGACY, 30.0, 2.0)
    assert (catalog.kind, catalog.timeout, catalog.connect_timeout) == (Kind.NEW, 90.0, 0.25)
    assert catalog.url == "http://127.0.0.1:9000/v1"
    everything, route = table.routes
    assert everything.split == (("monolith", 10_000),)
    assert route.split == (("catalog", 3333), ("monolith", 6667))
    assert route.match.methods == frozenset({"GET", "HEAD"})
    assert route.match.host == "*.example.com"
    assert route.match.headers == (("x-canary", "1"),)
    assert route.sticky is not None
    assert (route.sticky.cookie, route.sticky.set_cookie) == ("session_id", True)
    assert (route.location.line, route.location.column, route.index) == (14, 5, 1)
    assert len(table.digest) == 16


BROKEN = {
    "unknown top-level key": (
        """\
        version: 1
        backend: {}
        """,
        [
            "t.yaml:1:1: table: missing required key 'backends'",
            "t.yaml:1:1: table: missing required key 'routes'",
            "t.yaml:2:1: table: unknown key 'backend' "
            "(allowed: authorizers, backends, routes, version)",
        ],
    ),
    "unsupported version": (
        """\
        version: 2
        backends: {m: {url: "http://h"}}
        routes: [{name: a, match: {path: /}, backend: m}]
        """,
        ["t.yaml:1:10: version: 2 is not supported (only 1 is)"],
    ),
    "unknown backend key and bad duration": (
        """\
        version: 1
        backends:
          m:
            url: http://h
            timout: 3s
            timeout: 30
            connect_timeout: 3 s
        routes: [{name: a, match: {path: /}, backend: m}]
        """,
        [
            "t.yaml:5:5: backends.m: unknown key 'timout' (allowed: circuit_breaker, "
            "connect_timeout, function, idle_timeout, kind, lambda, max_concurrency, "
            "max_response_header_bytes, max_response_headers, timeout, url)",
            "t.yaml:6:14: backends.m.timeout: expected a duration with a unit ('250ms', '3s', "
            "'1m', or 0), got an integer",
            "t.yaml:7:22: backends.m.connect_timeout: bad duration '3 s' (a number with a unit: "
            "ms, s, m or h, e.g. '250ms', '3s', '1m30s')",
        ],
    ),
    "response head limits": (
        """\
        version: 1
        backends:
          m: {url: "http://h", max_response_headers: 0, max_response_header_bytes: 1048577}
          f: {function: "a.b:c", max_response_headers: 10}
        routes: [{name: a, match: {path: /}, backend: m}]
        """,
        [
            "t.yaml:3:46: backends.m.max_response_headers: 0 is out of range (1 to 10000)",
            "t.yaml:3:76: backends.m.max_response_header_bytes: 1048577 is out of range "
            "(1 to 1048576)",
            "t.yaml:4:26: backends.f.max_response_headers: applies only to url and lambda backends",
        ],
    ),
    "duration out of range": (
        """\
        version: 1
        backends: {m: {url: "http://h", connect_timeout: 0s}}
        routes: [{name: a, match: {path: /}, backend: m}]
        """,
        [
            "t.yaml:2:50: backends.m.connect_timeout: duration '0s' is out of range (more than "
            "0, at most 3600s)"
        ],
    ),
    "exactly one target": (
        """\
        version: 1
        backends:
          both: {url: "http://h", function: "a.b:c"}
          none: {kind: legacy}
        routes: [{name: a, match: {path: /}, backend: both}]
        """,
        [
            "t.yaml:3:9: backends.both: exactly one of url, function, lambda is required "
            "(found: url, function)",
            "t.yaml:4:9: backends.none: exactly one of url, function, lambda is required "
            "(found: none)",
            "t.yaml:5:47: routes[0] (a).backend: unknown backend 'both'",
        ],
    ),
    "bad urls and references": (
        """\
        version: 1
        backends:
          a: {url: "ftp://h"}
          b: {url: "http://h:99999"}
          c: {url: "http://h/x?q=1"}
          d: {function: "not a ref"}
          e: {url: "http://user:pw@h"}
          f: {url: "http://h", kind: old}
        routes: [{name: r, match: {path: /}, backend: f}]
        """,
        [
            "t.yaml:3:12: backends.a.url: 'ftp://h' is not an http:// or https:// URL",
            "t.yaml:4:12: backends.b.url: 'http://h:99999' has a bad port",
            "t.yaml:5:12: backends.c.url: 'http://h/x?q=1': a backend URL takes no query string "
            "or fragment",
            "t.yaml:6:17: backends.d.function: 'not a ref' is not 'module.path:attr'",
            "t.yaml:7:12: backends.e.url: 'http://user:pw@h': credentials in the URL are not "
            "supported",
            "t.yaml:8:30: backends.f.kind: 'old' is not one of legacy, new",
        ],
    ),
    "settings that do not apply to the backend kind": (
        """\
        version: 1
        backends:
          f: {function: "a.b:c", connect_timeout: 1s}
          u: {url: "http://h", max_concurrency: 0}
        routes: [{name: r, match: {path: /}, backend: u}]
        """,
        [
            "t.yaml:3:26: backends.f.connect_timeout: applies only to url and lambda backends",
            "t.yaml:4:41: backends.u.max_concurrency: 0 is out of range (1 to 100000)",
        ],
    ),
    "duplicate names": (
        """\
        version: 1
        backends:
          m: {url: "http://h"}
          m: {url: "http://g"}
        routes:
          - {name: a, match: {path: /}, backend: m}
          - {name: a, match: {path: /x}, backend: m}
        """,
        [
            "t.yaml:4:3: backends: duplicate key 'm' (first at line 3)",
            "t.yaml:7:12: routes[1].name: duplicate route name 'a' (first at line 6)",
        ],
    ),
    "bad names": (
        """\
        version: 1
        backends:
          Mono: {url: "http://h"}
        routes:
          - {name: "Every Thing", match: {path: /}, backend: Mono}
          - {name: none, match: {path: /x}, backend: Mono}
        """,
        [
            "t.yaml:3:3: backends: bad name 'Mono' (1-63 of a-z, 0-9, '_', '-')",
            "t.yaml:5:12: routes[0].name: bad name 'Every Thing' (1-63 of a-z, 0-9, '_', '-')",
            "t.yaml:5:54: routes[0].backend: unknown backend 'Mono'",
            "t.yaml:6:12: routes[1].name: 'none' is reserved for unmatched requests",
            "t.yaml:6:46: routes[1].backend: unknown backend 'Mono'",
        ],
    ),
    "weights": (
        """\
        version: 1
        backends: {a: {url: "http://a"}, b: {url: "http://b"}}
        routes:
          - {name: r1, match: {path: /1}, split: {a: 50, b: 49.99}}
          - {name: r2, match: {path: /2}, split: {a: 33.333, b: 66.667}}
          - {name: r3, match: {path: /3}, split: {a: "50", b: 50}}
          - {name: r4, match: {path: /4}, split: {a: 101, b: -1}}
          - {name: r5, match: {path: /5}, split: {a: 100, c: 0}}
          - {name: r6, match: {path: /6}, split: {}}
          - {name: r7, match: {path: /7}, backend: a, split: {a: 100}}
          - {name: r8, match: {path: /8}}
        """,
        [
            "t.yaml:4:42: routes[0] (r1).split: weights must sum to 100, not 99.99",
            "t.yaml:5:46: routes[1] (r2).split.a: 33.333 has more than 2 decimals",
            "t.yaml:5:57: routes[1] (r2).split.b: 66.667 has more than 2 decimals",
            "t.yaml:6:46: routes[2] (r3).split.a: expected a number, got a string",
            "t.yaml:7:46: routes[3] (r4).split.a: 101 is out of range (0 to 100)",
            "t.yaml:7:54: routes[3] (r4).split.b: -1 is out of range (0 to 100)",
            "t.yaml:8:51: routes[4] (r5).split: unknown backend 'c' (known: a, b)",
            "t.yaml:9:42: routes[5] (r6).split: at least one backend is required",
            "t.yaml:10:5: routes[6] (r7): exactly one of backend, split is required",
            "t.yaml:11:5: routes[7] (r8): exactly one of backend, split is required",
        ],
    ),
    "match": (
        """\
        version: 1
        backends: {a: {url: "http://a"}}
        routes:
          - {name: r1, match: {path: products}, backend: a}
          - {name: r2, match: {path: "/p/{id}x"}, backend: a}
          - {name: r3, match: {path: "/p/{rest+}/x"}, backend: a}
          - {name: r4, match: {path: "/p/../x"}, backend: a}
          - {name: r5, match: {path: "/p/%2F"}, backend: a}
          - {name: r6, match: {path: /, methods: [get, "BAD METHOD"]}, backend: a}
          - {name: r7, match: {path: /, host: "example.com:8080"}, backend: a}
          - {name: r8, match: {path: /, headers: {X-V: 2}}, backend: a}
          - {name: r9, match: {methods: [GET]}, backend: a}
          - {name: r10, match: {path: /, method: GET}, backend: a}
        """,
        [
            "t.yaml:4:30: routes[0] (r1).match.path: 'products': must start with '/'",
            "t.yaml:5:30: routes[1] (r2).match.path: '/p/{id}x': segment '{id}x': a parameter "
            "must fill the whole segment",
            "t.yaml:6:30: routes[2] (r3).match.path: '/p/{rest+}/x': '{rest+}': a greedy "
            "parameter must be the last segment",
            "t.yaml:7:30: routes[3] (r4).match.path: '/p/../x': segment '..': dot segments are "
            "not allowed",
            "t.yaml:8:30: routes[4] (r5).match.path: '/p/%2F': segment '%2F': encoded '/' or '\\' "
            "in the path is not allowed",
            "t.yaml:9:43: routes[5] (r6).match.methods: methods are case-sensitive; did you mean "
            "'GET'?",
            "t.yaml:9:48: routes[5] (r6).match.methods: 'BAD METHOD' is not a method name",
            "t.yaml:10:39: routes[6] (r7).match.host: 'example.com:8080' is not a host name or "
            "'*.domain' (no port, no scheme)",
            "t.yaml:11:48: routes[7] (r8).match.headers.X-V: expected a string, got an integer "
            "(quote it)",
            "t.yaml:12:23: routes[8] (r9).match: missing required key 'path'",
            "t.yaml:13:34: routes[9] (r10).match: unknown key 'method' (allowed: headers, host, "
            "methods, path)",
        ],
    ),
    "sticky": (
        """\
        version: 1
        backends: {a: {url: "http://a"}, b: {url: "http://b"}}
        routes:
          - {name: r1, match: {path: /1}, backend: a, sticky: {cookie: s}}
          - {name: r2, match: {path: /2}, split: {a: 50, b: 50}, sticky: {cookie: s, header: h}}
          - {name: r3, match: {path: /3}, split: {a: 50, b: 50}, sticky: {header: h, set: true}}
          - {name: r4, match: {path: /4}, split: {a: 50, b: 50}, sticky: {cookie: "a b"}}
        """,
        [
            "t.yaml:4:47: routes[0] (r1).sticky: applies only to a route with a split",
            "t.yaml:5:66: routes[1] (r2).sticky: exactly one of cookie, header is required",
            "t.yaml:6:78: routes[2] (r3).sticky.set: applies only to a cookie",
            "t.yaml:7:75: routes[3] (r4).sticky.cookie: 'a b' is not a valid cookie name",
        ],
    ),
    "fallback": (
        """\
        version: 1
        backends: {a: {url: "http://a"}}
        routes:
          - {name: r1, match: {path: /1}, backend: a, fallback: b}
          - {name: r2, match: {path: /2}, backend: a, fallback: [a]}
        """,
        [
            "t.yaml:4:57: routes[0] (r1).fallback: unknown backend 'b' (known: a)",
            "t.yaml:5:57: routes[1] (r2).fallback: expected a string, got a list",
        ],
    ),
    "fallback with statuses": (
        """\
        version: 1
        backends: {a: {url: "http://a"}, m: {url: "http://m"}}
        routes:
          - {name: r1, match: {path: /1}, backend: a, fallback: {statuses: [503]}}
          - {name: r2, match: {path: /2}, backend: a, fallback: {backend: m, statuses: [403]}}
          - {name: r3, match: {path: /3}, backend: a, fallback: {backend: x, statuses: []}}
          - {name: r4, match: {path: /4}, backend: a, fallback: {backend: m, status: [503]}}
        """,
        [
            "t.yaml:4:57: routes[0] (r1).fallback: missing required key 'backend'",
            "t.yaml:5:81: routes[1] (r2).fallback.statuses: 403 is not one of 404, 405 or 500-599",
            "t.yaml:6:67: routes[2] (r3).fallback.backend: unknown backend 'x' (known: a, m)",
            "t.yaml:6:80: routes[2] (r3).fallback.statuses: list at least one status, "
            "or leave it out",
            "t.yaml:7:70: routes[3] (r4).fallback: unknown key 'status' "
            "(allowed: backend, max_body, statuses, unsafe_methods)",
        ],
    ),
    "retries": (
        """\
        version: 1
        backends: {a: {url: "http://a"}}
        routes:
          - {name: r1, match: {path: /1}, backend: a, retries: {retry_on: [timeout]}}
          - {name: r2, match: {path: /2}, backend: a, retries: {attempts: 9}}
          - {name: r3, match: {path: /3}, backend: a, retries: {attempts: 1, retry_on: [5xx]}}
          - {name: r4, match: {path: /4}, backend: a,
             retries: {attempts: 1, budget: {ratio: 2, min_per_second: x}, statuses: [200]}}
        """,
        [
            "t.yaml:4:56: routes[0] (r1).retries: missing required key 'attempts'",
            "t.yaml:5:67: routes[1] (r2).retries.attempts: 9 is out of range (1 to 5)",
            "t.yaml:6:81: routes[2] (r3).retries.retry_on: '5xx' is not one of connect_failure, "
            "reset, timeout",
            "t.yaml:8:45: routes[3] (r4).retries.budget.ratio: 2 is out of range (0 to 1)",
            "t.yaml:8:64: routes[3] (r4).retries.budget.min_per_second: expected a number, "
            "got a string",
            "t.yaml:8:79: routes[3] (r4).retries.statuses: 200 is out of range (400 to 599)",
        ],
    ),
    "circuit breaker": (
        """\
        version: 1
        backends:
          a: {url: "http://a", circuit_breaker: {failure_ratio: 0, window: 10}}
          b: {url: "http://b", circuit_breaker: {probes: 0, open_for: 2h, min_request: 5}}
        routes: [{name: r, match: {path: /}, backend: a}]
        """,
        [
            "t.yaml:3:57: backends.a.circuit_breaker.failure_ratio: must be above 0",
            "t.yaml:3:68: backends.a.circuit_breaker.window: expected a duration with a unit "
            "('250ms', '3s', '1m'), got an integer",
            "t.yaml:4:50: backends.b.circuit_breaker.probes: 0 is out of range (1 to 100)",
            "t.yaml:4:63: backends.b.circuit_breaker.open_for: duration '2h' is out of range "
            "(more than 0, at most 3600s)",
            "t.yaml:4:67: backends.b.circuit_breaker: unknown key 'min_request' (allowed: "
            "failure_ratio, min_requests, open_for, probes, window)",
        ],
    ),
    "shadow": (
        """\
        version: 1
        backends: {a: {url: "http://a"}, b: {url: "http://b"}}
        routes:
          - {name: r1, match: {path: /1}, backend: a, shadow: {percent: 10}}
          - {name: r2, match: {path: /2}, backend: a, shadow: {backend: c, percent: 101}}
          - {name: r3, match: {path: /3}, backend: a, shadow: {backend: b, methods: [post]}}
          - {name: r4, match: {path: /4}, backend: a, shadow: {backend: b, ignore: [items.id]}}
          - {name: r5, match: {path: /5}, backend: a, shadow: {backend: b, max_body: -1}}
        """,
        [
            "t.yaml:4:55: routes[0] (r1).shadow: missing required key 'backend'",
            "t.yaml:5:65: routes[1] (r2).shadow.backend: unknown backend 'c' (known: a, b)",
            "t.yaml:5:77: routes[1] (r2).shadow.percent: 101 is out of range (0 to 100)",
            "t.yaml:6:78: routes[2] (r3).shadow.methods: methods are case-sensitive; "
            "did you mean 'POST'?",
            "t.yaml:7:76: routes[3] (r4).shadow.ignore: 'items.id' is not a JSON path",
            "t.yaml:8:78: routes[4] (r5).shadow.max_body: -1 is out of range (0 to 16777216)",
        ],
    ),
    "zero where it is refused, saying so": (
        """\
        version: 1
        backends:
          a: {url: "http://a", connect_timeout: 0ms,
              circuit_breaker: {min_requests: 0, window: 0s, open_for: 0m}}
        routes:
          - {name: r, match: {path: /}, backend: a, retries: {attempts: 0},
             shadow: {backend: a, timeout: 0s}}
        """,
        [
            "t.yaml:3:41: backends.a.connect_timeout: duration '0ms' is out of range (more than "
            "0, at most 3600s)",
            "t.yaml:4:39: backends.a.circuit_breaker.min_requests: 0 is out of range "
            "(1 to 1000000)",
            "t.yaml:4:50: backends.a.circuit_breaker.window: duration '0s' is out of range "
            "(more than 0, at most 3600s)",
            "t.yaml:4:64: backends.a.circuit_breaker.open_for: duration '0m' is out of range "
            "(more than 0, at most 3600s)",
            "t.yaml:6:65: routes[0] (r).retries.attempts: 0 is out of range (1 to 5)",
            "t.yaml:7:36: routes[0] (r).shadow.timeout: duration '0s' is out of range (more than "
            "0, at most 600s)",
        ],
    ),
    "numbers and flags YAML reads but a table does not": (
        """\
        version: 1
        backends: {a: {url: "http://a", max_concurrency: !!int ten}}
        routes:
          - {name: r, match: {path: /}, backend: a, shadow: {backend: a, learn_noise: !!bool maybe},
             retries: {attempts: 1, budget: {ratio: 0x1, min_per_second: .inf}}}
        """,
        [
            "t.yaml:2:50: backends.a.max_concurrency: 'ten' is not an integer",
            "t.yaml:4:79: routes[0] (r).shadow.learn_noise: expected true or false, got 'maybe'",
            "t.yaml:5:45: routes[0] (r).retries.budget.ratio: '0x1' is not a decimal number",
            "t.yaml:5:66: routes[0] (r).retries.budget.min_per_second: '.inf' is not a decimal "
            "number",
        ],
    ),
    "a backend with a bad target is reported once, not again by the routes naming it": (
        """\
        version: 1
        backends: {a: {url: 8080}, b: {lambda: "ftp://b"}}
        routes:
          - {name: r, match: {path: /}, backend: a, fallback: b}
        """,
        [
            "t.yaml:2:21: backends.a.url: expected a string, got an integer (quote it)",
            "t.yaml:2:40: backends.b.lambda: 'ftp://b' is not an http:// or https:// URL",
        ],
    ),
    "wrong shapes": (
        """\
        version: 1
        backends: [a, b]
        routes: {name: x}
        """,
        [
            "t.yaml:2:11: backends: expected a mapping, got a list",
            "t.yaml:3:9: routes: expected a list, got a mapping",
        ],
    ),
    "yaml merge keys are refused, not silently applied": (
        """\
        version: 1
        backends:
          base: &base {url: "http://a", timeout: 3s}
          other: {<<: *base, kind: legacy}
        routes: [{name: r, match: {path: /}, backend: base}]
        """,
        [
            "t.yaml:4:11: backends.other: YAML merge keys ('<<') are not supported",
            "t.yaml:4:10: backends.other: exactly one of url, function, lambda is required "
            "(found: none)",
        ],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_tables_report_every_problem_with_its_location(case: str) -> None:
    text, expected = BROKEN[case]
    assert sorted(problems(text)) == sorted(expected)


def test_yaml_syntax_error_names_line_and_column() -> None:
    assert problems("version: 1\nbackends: {a: [}\n") == [
        "t.yaml:2:16: invalid YAML: expected the node content, but found '}'"
    ]


def test_empty_and_non_mapping_files() -> None:
    assert problems("") == ["t.yaml:1:1: the file is empty"]
    assert problems("- a\n") == ["t.yaml:1:1: table: expected a mapping, got a list"]


def test_python_object_tags_are_refused_by_the_safe_loader() -> None:
    assert problems("version: !!python/object:os.system 1\n") == [
        "t.yaml:1:1: table: missing required key 'backends'",
        "t.yaml:1:1: table: missing required key 'routes'",
        "t.yaml:1:10: version: expected an integer, got a value tagged "
        "'tag:yaml.org,2002:python/object:os.system'",
    ]


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_TABLE_BYTES + 1))
    with pytest.raises(TableError) as caught:
        load_table(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:1:1: file is larger than {MAX_TABLE_BYTES} bytes"
    ]


def test_missing_file_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(TableError) as caught:
        load_table(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:1:1: cannot read: No such file or directory"
    ]


def test_alias_bomb_is_not_expanded() -> None:
    # Aliases compose to shared nodes; the loader walks only the keys it knows, so a
    # "billion laughs" document under an unknown key costs nothing and is reported once.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "version: 1\nbombs:\n" + "\n".join("  " + line for line in lines) + "\n"
    found = problems(text)
    assert (
        "t.yaml:2:1: table: unknown key 'bombs' (allowed: authorizers, backends, routes, version)"
        in found
    )


def test_control_characters_are_reported_where_they_stand() -> None:
    # PyYAML's ReaderError carries only an offset; every reader of YAML gets FILE:LINE:COL.
    assert problems("version: 1\nbackends: {m: \x01}\n") == [
        "t.yaml:2:15: invalid YAML: unacceptable character #x0001: special characters are "
        "not allowed"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"version: 1\r\nbackends: {m: caf\xc3\xa9 \xff}\n",
            "t.yaml:2:20: invalid YAML: 'utf-8' codec can't decode byte #xff: invalid start byte",
        ),
        (
            codecs.BOM_UTF8 + b"a: 1\nb: \x02\n",
            "t.yaml:2:4: invalid YAML: unacceptable character #x0002: special characters are "
            "not allowed",
        ),
        (
            codecs.BOM_UTF16_LE + "a: 1\nb: \x02\n".encode("utf-16-le"),
            "t.yaml:2:4: invalid YAML: unacceptable character #x0002: special characters are "
            "not allowed",
        ),
        (
            b"a: 1\n---\nb: 2\n",
            "t.yaml:2:1: invalid YAML: expected a single document in the stream, but found "
            "another document",
        ),
        (
            b"a: " + b"[" * 100 + b"]" * 100 + b"\n",
            f"t.yaml:1:{3 + MAX_DEPTH}: invalid YAML: nested more than {MAX_DEPTH} levels deep",
        ),
        (
            # Deep enough to exhaust the stack of a recursive composer.
            b"[" * 100_000 + b"]" * 100_000,
            f"t.yaml:1:{1 + MAX_DEPTH}: invalid YAML: nested more than {MAX_DEPTH} levels deep",
        ),
    ],
    ids=["bad utf-8", "utf-8 bom", "utf-16", "two documents", "too deep", "stack-deep"],
)
def test_every_yaml_error_is_a_table_error_with_its_location(data: bytes, expected: str) -> None:
    with pytest.raises(TableError) as caught:
        read_yaml(data, "t.yaml")
    assert [str(p) for p in caught.value.problems] == [expected]


def test_read_yaml_gives_the_node_tree_or_none() -> None:
    assert read_yaml(b"# nothing but a comment\n", "t.yaml") is None
    node = read_yaml(b"a: [1, 2]\n", "t.yaml")
    assert node is not None
    assert node.start_mark.line == 0
    with pytest.raises(TableError) as caught:
        read_yaml(b"#" * (MAX_TABLE_BYTES + 1), "t.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"t.yaml:1:1: file is larger than {MAX_TABLE_BYTES} bytes"
    ]


def test_read_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_bytes(b"- a\n- \x07\n")
    with pytest.raises(TableError) as caught:
        read_yaml_file(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:2:3: invalid YAML: unacceptable character #x0007: special characters are "
        "not allowed"
    ]
    path.write_bytes(b"- a\n")
    assert read_yaml_file(path) is not None
    with pytest.raises(TableError) as caught:
        read_yaml_file(tmp_path / "nope.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read: No such file or directory"
    ]


def test_a_rewrite_is_read_and_checked_against_the_routes_path() -> None:
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends: {m: {url: "http://m"}}
            routes:
              - {name: p, match: {path: /shop}, backend: m, rewrite: {prefix: /v2}}
              - {name: t, match: {path: "/o/{id}"}, backend: m, rewrite: {path: "/orders/{id}"}}
            """
        ).encode(),
        "t.yaml",
    )
    p, t = table.routes
    assert (p.rewrite.prefix, p.rewrite.path) == ("/v2", None)  # type: ignore[union-attr]
    assert (t.rewrite.prefix, t.rewrite.path) == (None, "/orders/{id}")  # type: ignore[union-attr]
    assert problems(
        """\
        version: 1
        backends: {m: {url: "http://m"}}
        routes:
          - {name: a, match: {path: "/o/{id}"}, backend: m, rewrite: {prefix: /v2}}
          - {name: b, match: {path: "/o/{id}"}, backend: m, rewrite: {path: "/x/{nope}"}}
          - {name: c, match: {path: /c}, backend: m, rewrite: {prefix: /a, path: /b}}
          - {name: d, match: {path: /d}, backend: m, rewrite: {}}
          - {name: e, match: {path: /e}, backend: m, rewrite: {prefix: 7}}
        """
    ) == [
        "t.yaml:4:62: routes[0] (a).rewrite.prefix: '/v2': 'prefix' needs a literal path to "
        "replace; this route's path is a template (use 'path' with its captures)",
        "t.yaml:5:62: routes[1] (b).rewrite.path: '/x/{nope}': {nope} is not a capture of the "
        "route (its captures: {id})",
        "t.yaml:6:55: routes[2] (c).rewrite: exactly one of prefix, path is required",
        "t.yaml:7:55: routes[3] (d).rewrite: exactly one of prefix, path is required",
        "t.yaml:8:64: routes[4] (e).rewrite.prefix: expected a string, got an integer (quote it)",
    ]


def test_header_maps_are_read_and_may_not_touch_the_gateways_fields() -> None:
    table = parse_table(
        textwrap.dedent(
            """\
            version: 1
            backends: {m: {url: "http://m"}}
            routes:
              - name: r
                match: {path: /}
                backend: m
                request_headers: {set: {X-Tenant: acme}, add: {X-By: gw}, remove: [X-Debug]}
                response_headers: {remove: [Server]}
            """
        ).encode(),
        "t.yaml",
    )
    (route,) = table.routes
    assert route.request_headers is not None
    assert route.request_headers.set == ((b"x-tenant", b"acme"),)
    assert route.request_headers.add == ((b"x-by", b"gw"),)
    assert route.request_headers.remove == frozenset({b"x-debug"})
    assert route.response_headers is not None
    assert route.response_headers.remove == frozenset({b"server"})
    assert problems(
        """\
        version: 1
        backends: {m: {url: "http://m"}}
        routes:
          - name: r
            match: {path: /}
            backend: m
            request_headers: {set: {Host: x, X-Forwarded-For: 1.2.3.4}, remove: [Connection]}
            response_headers: {add: {"bad name": x, X-Ok: " padded"}, drop: [x]}
        """
    ) == [
        "t.yaml:7:29: routes[0] (r).request_headers.set: 'Host' may not be changed (hop-by-hop "
        "fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and X-Request-Id "
        "are the gateway's)",
        "t.yaml:7:38: routes[0] (r).request_headers.set: 'X-Forwarded-For' may not be changed "
        "(hop-by-hop fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and "
        "X-Request-Id are the gateway's)",
        "t.yaml:7:74: routes[0] (r).request_headers.remove[0]: 'Connection' may not be changed "
        "(hop-by-hop fields, Host, Content-Length, Transfer-Encoding, X-Forwarded-*, Via and "
        "X-Request-Id are the gateway's)",
        "t.yaml:8:30: routes[0] (r).response_headers.add: 'bad name' is not a header name",
        "t.yaml:8:51: routes[0] (r).response_headers.add.X-Ok: ' padded' is not a header value "
        "(no control characters, no leading or trailing space)",
        "t.yaml:8:63: routes[0] (r).response_headers: unknown key 'drop' (allowed: add, remove, "
        "set)",
    ]
