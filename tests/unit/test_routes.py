"""The runnable routing table (proxy/routes.py): compiling is pure and orders routes by
precedence; a request resolves to one route, path and Host, or to the gateway's 400 and 404;
a route chooses its backend by weight or by the sticky key."""

from __future__ import annotations

import random
import re

import httpx
import pytest

from proxy.backends import backend_factory
from proxy.backends.adapters import HttpxUpstream, new_client
from proxy.backends.base import Answer, ProxyRequest
from proxy.backends.guarded import GuardedBackend
from proxy.errors import BadRequest, NoRoute
from proxy.hosts import Host
from proxy.live import publish
from proxy.metrics import Metrics
from proxy.routes import HOSTS_KEPT, CompiledRoute, CompiledTable, compile_table
from proxy.table.loader import TableError, parse_table
from proxy.table.model import WEIGHT_SCALE
from proxy.table.model import Backend as BackendSpec


class FakeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.name, self.kind, self.spec = spec.name, spec.kind, spec

    async def call(self, request: ProxyRequest) -> Answer:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


TABLE = """\
version: 1
backends:
  legacy: {url: "http://legacy", kind: legacy}
  new: {url: "http://new"}
  spare: {url: "http://spare", kind: legacy}
routes:
  - {name: everything-else, match: {path: /}, backend: legacy}
  - {name: products, match: {path: /products, methods: [HEAD, GET]},
     split: {new: 50, legacy: 50}, fallback: spare}
  - {name: product, match: {path: "/products/{id}", methods: [GET]}, backend: new}
  - {name: product-any, match: {path: "/products/{id}"}, backend: legacy}
  - {name: api-v2, match: {path: /api, host: "*.example.com", headers: {X-Api-Version: "2"}},
     backend: new}
  - {name: api, match: {path: /api}, backend: legacy}
"""

STICKY = """\
version: 1
backends:
  legacy: {url: "http://legacy", kind: legacy}
  new: {url: "http://new"}
routes:
  - {name: by-header, match: {path: /h}, split: {new: 50, legacy: 50}, sticky: {header: X-User}}
  - {name: by-cookie, match: {path: /c}, split: {new: 50, legacy: 50},
     sticky: {cookie: sid, set: true}}
  - {name: cookie-unset, match: {path: /u}, split: {new: 50, legacy: 50}, sticky: {cookie: sid}}
  - {name: random, match: {path: /r}, split: {new: 30, legacy: 70}}
  - {name: all-new, match: {path: /n}, split: {new: 100, legacy: 0}, sticky: {header: X-User}}
"""


def compiled(text: str = TABLE) -> CompiledTable:
    return compile_table(parse_table(text.encode(), "t.yaml"), FakeBackend)


def route(table: CompiledTable, name: str) -> CompiledRoute:
    (found,) = [r for r in table.router.routes if r.name == name]
    return found


def test_routes_are_ordered_by_precedence_and_get_their_slot() -> None:
    table = compiled()
    names = [r.name for r in table.router.routes]
    # Template before literal prefix before "/"; between equal paths more conditions first
    # (api-v2 has two); then file order (products before api).
    assert names == ["product", "product-any", "api-v2", "products", "api", "everything-else"]
    assert [r.slot for r in table.router.routes] == [0, 1, 2, 3, 4, 5]


def test_route_keys_name_the_one_method_or_any() -> None:
    table = compiled()
    assert route(table, "product").route_key == "GET /products/{id}"
    assert route(table, "product-any").route_key == "ANY /products/{id}"
    assert route(table, "products").route_key == "ANY /products"  # two methods: ANY
    assert route(table, "everything-else").route_key == "ANY /"


def test_backend_names_include_the_fallback() -> None:
    table = compiled()
    assert route(table, "products").backend_names == {"new", "legacy", "spare"}
    assert route(table, "api").backend_names == {"legacy"}
    assert set(table.backends) == {"legacy", "new", "spare"}


def test_routed_headers_are_what_routes_match_or_stick_on() -> None:
    assert compiled().routed_headers == frozenset({b"x-api-version"})
    assert compiled(STICKY).routed_headers == frozenset({b"x-user", b"cookie"})


def test_resolve_gives_the_route_captures_normalised_path_and_host() -> None:
    table = compiled()
    resolved = table.resolve("GET", b"/products//x/../7", b"Shop.Example.COM.:8080", [])
    assert resolved.route.name == "product"
    assert resolved.captures == {"id": "7"}
    assert resolved.path == "/products/7"
    assert resolved.host == Host("shop.example.com", 8080, b"shop.example.com:8080")
    assert table.resolve("POST", b"/products/7", None, []).route.name == "product-any"
    assert table.resolve("GET", b"/products/%37", b"a", []).path == "/products/7"


def test_resolve_matches_host_and_headers_on_the_normal_form() -> None:
    table = compiled()
    v2 = [(b"x-api-version", b"2")]
    assert table.resolve("GET", b"/api/x", b"API.Example.com.", v2).route.name == "api-v2"
    assert table.resolve("GET", b"/api/x", b"api.example.com", []).route.name == "api"
    # A wildcard needs a label before its suffix.
    assert table.resolve("GET", b"/api/x", b"example.com", v2).route.name == "api"
    assert table.resolve("GET", b"/api", None, v2).route.name == "api"


def test_a_bad_path_is_bad_request_with_the_gateways_message() -> None:
    table = compiled()
    with pytest.raises(BadRequest) as caught:
        table.resolve("GET", b"/a%2Fb", b"shop", [])
    assert caught.value.status == 400
    assert caught.value.code == "bad_request"
    assert caught.value.message == "bad path: encoded '/' or '\\' in the path is not allowed"
    with pytest.raises(BadRequest) as caught:
        table.resolve("GET", b"*", b"shop", [])
    assert caught.value.message == "bad path: the request target must be a path starting with '/'"


def test_a_bad_host_is_bad_request_with_the_gateways_message() -> None:
    table = compiled()
    with pytest.raises(BadRequest) as caught:
        table.resolve("GET", b"/", b"exa mple", [])
    assert caught.value.message == "bad Host: 'exa mple' is not a valid host name"
    with pytest.raises(BadRequest) as caught:
        table.resolve("GET", b"/", b"shop:99999", [])
    assert caught.value.message == "bad Host: port 99999 in Host is out of range"
    # The path is checked first.
    with pytest.raises(BadRequest) as caught:
        table.resolve("GET", b"/%zz", b"exa mple", [])
    assert caught.value.message == "bad path: '%' must be followed by two hex digits"


def test_no_route_names_the_method_and_normalised_path() -> None:
    table = compile_table(
        parse_table(
            b"version: 1\nbackends: {a: {url: 'http://a'}}\n"
            b"routes: [{name: shop, match: {path: /shop}, backend: a}]\n",
            "t.yaml",
        ),
        FakeBackend,
    )
    with pytest.raises(NoRoute) as caught:
        table.resolve("DELETE", b"/x//y/../z", b"shop", [])
    assert caught.value.status == 404
    assert caught.value.message == "no route matches DELETE /x/z"
    assert table.resolve("GET", b"/shop/", None, []).route.name == "shop"


def test_the_host_cache_stays_bounded() -> None:
    table = compiled()
    first = table.normalise(b"/", b"Cached.Test")[1]
    assert table.normalise(b"/", b"Cached.Test")[1] is first  # served from the cache
    for n in range(HOSTS_KEPT + 50):
        table.normalise(b"/", b"h%d.test" % n)
    assert len(table._hosts) == HOSTS_KEPT
    # Past the bound a Host is still normalised, just not kept.
    late = table.normalise(b"/", b"LATE.test:81")[1]
    assert late == Host("late.test", 81, b"late.test:81")
    assert b"LATE.test:81" not in table._hosts
    assert len(table._hosts) == HOSTS_KEPT


def test_choose_without_sticky_is_random_by_weight() -> None:
    table = compiled(STICKY)
    randomly = route(table, "random")
    rng, mirror = random.Random(7), random.Random(7)
    picks = [randomly.choose([], rng) for _ in range(500)]
    # 30% new in file order: points below 3000 land on new.
    expected = ["new" if mirror.randrange(WEIGHT_SCALE) < 3000 else "legacy" for _ in range(500)]
    assert [backend.name for backend, _ in picks] == expected
    assert all(minted is None for _, minted in picks)
    assert 100 < expected.count("new") < 200


def test_choose_with_a_sticky_key_is_the_splits_pick_for_key() -> None:
    table = compiled(STICKY)
    by_header, by_cookie = route(table, "by-header"), route(table, "by-cookie")
    rng = random.Random(1)
    seen = set()
    for user in range(40):
        key = f"user-{user}"
        backend, minted = by_header.choose([(b"x-user", key.encode())], rng)
        assert backend is by_header.split.pick_for_key(key)
        assert minted is None
        seen.add(backend.name)
        cookies = [(b"cookie", b"other=1; sid=" + key.encode())]
        backend, minted = by_cookie.choose(cookies, rng)
        assert backend is by_cookie.split.pick_for_key(key)
        assert minted is None
    assert seen == {"new", "legacy"}


def test_a_sticky_cookie_that_is_set_mints_a_key_when_the_request_has_none() -> None:
    by_cookie = route(compiled(STICKY), "by-cookie")
    keys = set()
    for _ in range(20):
        backend, minted = by_cookie.choose([(b"cookie", b"other=1")], random.Random(0))
        assert minted is not None
        assert re.fullmatch(r"[0-9a-f]{32}", minted)
        assert backend is by_cookie.split.pick_for_key(minted)
        keys.add(minted)
    assert len(keys) == 20


def test_a_sticky_cookie_that_is_not_set_picks_at_random_without_a_key() -> None:
    unset = route(compiled(STICKY), "cookie-unset")
    rng, mirror = random.Random(5), random.Random(5)
    for _ in range(50):
        backend, minted = unset.choose([], rng)
        assert minted is None
        assert backend.name == ("new" if mirror.randrange(WEIGHT_SCALE) < 5000 else "legacy")


def test_chosen_for_is_certain_only_for_one_live_backend_or_a_sticky_key() -> None:
    table = compiled(STICKY)
    assert route(table, "all-new").chosen_for([]) is table.backends["new"]
    assert route(table, "random").chosen_for([]) is None
    by_header = route(table, "by-header")
    assert by_header.chosen_for([]) is None
    assert by_header.chosen_for([(b"x-user", b"u7")]) is by_header.split.pick_for_key("u7")
    assert route(table, "by-cookie").chosen_for([(b"cookie", b"sid=k")]) is route(
        table, "by-cookie"
    ).split.pick_for_key("k")


def test_compile_touches_no_metric_and_publish_makes_the_breaker_series() -> None:
    text = TABLE.replace(
        'new: {url: "http://new"}', 'new: {url: "http://new", circuit_breaker: {}}'
    )
    metrics = Metrics("t")
    client = new_client(httpx.MockTransport(lambda request: httpx.Response(200)))
    make = backend_factory(
        client, HttpxUpstream(httpx.MockTransport(lambda r: httpx.Response(200)))
    )
    before = metrics.exposition()
    table = compile_table(parse_table(text.encode(), "t.yaml"), make)
    assert isinstance(table.backends["new"], GuardedBackend)
    after = metrics.exposition()
    assert b"strangler_circuit_breaker_state{" not in after
    assert after == before  # nothing at all changed
    publish(table, metrics)
    exposition = metrics.exposition().decode()
    assert 'strangler_circuit_breaker_state{backend="new",state="closed"} 1.0' in exposition
    assert 'strangler_circuit_breaker_state{backend="new",state="open"} 0.0' in exposition


def test_every_backend_that_cannot_be_built_is_reported_at_once() -> None:
    def make(spec: BackendSpec) -> FakeBackend:
        if spec.name != "new":
            raise ValueError(f"cannot build {spec.name}")
        return FakeBackend(spec)

    with pytest.raises(TableError) as caught:
        compile_table(parse_table(TABLE.encode(), "t.yaml"), make)
    assert [p.message for p in caught.value.problems] == [
        "backends.legacy: cannot build legacy",
        "backends.spare: cannot build spare",
    ]
    assert [str(p.location) for p in caught.value.problems] == ["t.yaml:3:11", "t.yaml:5:10"]
