"""Authorizers (docs/authorizers.md) over real sockets: a raw-socket authorizer and backend
recording every byte, the gateway in between. What the authorizer is sent, what the backend
gets, what the client gets on a denial or a failure, the cache, single flight, the metrics and
the access log; then Lambda authorizers, in process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import functions
from tests.support import (
    Exchange,
    RawClient,
    RawUpstream,
    ThreadedServers,
    free_port,
    response,
    running_gateway,
)

pytestmark = pytest.mark.sockets


def json_answer(status: str, payload: object, headers: list[tuple[str, str]]) -> bytes:
    body = json.dumps(payload).encode()
    return response(
        status,
        [*headers, ("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        body,
    )


async def session_service(exchange: Exchange) -> None:
    """The monolith's /session/whoami: the session cookie's value decides the answer."""
    cookie = next(iter(exchange.request.header("cookie")), "")
    session = dict(p.strip().split("=", 1) for p in cookie.split(";") if "=" in p)
    who = session.get("session_id", "")
    if who.startswith("user-"):
        uid = who.removeprefix("user-")
        await exchange.send(
            json_answer(
                "200 OK",
                {"id": int(uid), "username": f"u{uid}"},
                [("X-User-Id", uid), ("X-User-Roles", "admin")],
            )
        )
    elif who == "expired":
        await exchange.send(
            json_answer(
                "401 Unauthorized", {"error": "not_logged_in"}, [("WWW-Authenticate", "Cookie")]
            )
        )
    elif who == "redirect":
        await exchange.send(
            response(
                "302 Found",
                [
                    ("Location", "/login?next=%2Fcart"),
                    ("Set-Cookie", "back=1; Path=/"),
                    ("Connection", "keep-alive"),
                    ("Content-Length", "9"),
                ],
                b"go log in",
            )
        )
    elif who == "broken":
        await exchange.send(response("500 Internal Server Error", body=b"oops"))
    elif who == "huge":
        await exchange.send(response(body=b"x" * (70 * 1024)))
    elif who == "slow":
        await asyncio.sleep(1.0)
        await exchange.send(response(body=b""))
    elif who.startswith("wait-"):
        await asyncio.sleep(0.4)
        await exchange.send(response(headers=[("X-User-Id", who), ("Content-Length", "0")]))
    else:
        await exchange.send(json_answer("401 Unauthorized", {"error": "unknown"}, []))


async def echo(exchange: Exchange) -> None:
    request = exchange.request
    body = json.dumps({"target": request.target, "headers": request.headers}).encode()
    await exchange.send(
        response(
            headers=[("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            body=body,
        )
    )


@dataclass
class Setup:
    auth: RawUpstream
    backend: RawUpstream
    servers: ThreadedServers

    @property
    def port(self) -> int:
        return self.servers.port("gateway")

    @property
    def url(self) -> str:
        return self.servers.url("gateway")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def results(self, authorizer: str = "session") -> dict[str, float]:
        text = httpx.get(f"{self.servers.url('admin')}/metrics").text
        return {
            sample.labels["result"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "strangler_authorizer_requests_total"
            and sample.labels["authorizer"] == authorizer
        }


def table(tmp_path: Path, auth: str, backend: str, ttl: str = "0s", timeout: str = "2s") -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""\
version: 1
backends:
  app: {{url: "{backend}", kind: legacy}}
authorizers:
  session:
    url: {auth}/session/whoami
    identity: [cookie:session_id]
    ttl: {ttl}
    timeout: {timeout}
    upstream_headers: [X-User-Id]
routes:
  - {{name: open, match: {{path: /}}, backend: app}}
  - {{name: cart, match: {{path: /cart}}, backend: app, authorizer: session}}
  - {{name: account, match: {{path: /account}}, backend: app, authorizer: session,
     optional: true}}
"""
    )
    return config


@pytest.fixture
def upstreams() -> Iterator[tuple[RawUpstream, RawUpstream]]:
    auth, backend = RawUpstream(session_service).start(), RawUpstream(echo).start()
    yield auth, backend
    auth.stop()
    backend.stop()


@contextlib.contextmanager
def gateway(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream], **table_args: str
) -> Iterator[Setup]:
    auth, backend = upstreams
    config = table(tmp_path, auth.url, backend.url, **table_args)
    with running_gateway(config, access_log="off") as (_, servers):
        yield Setup(auth, backend, servers)


def backend_headers(reply: httpx.Response) -> list[tuple[str, str]]:
    assert reply.status_code == 200, reply.text
    return [(n, v) for n, v in reply.json()["headers"]]


# ---- what the authorizer is sent ---------------------------------------------------------------


def test_a_url_authorizer_gets_the_forwarded_headers_and_nothing_else_of_the_client(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        client = RawClient(setup.port)
        reply = client.request(
            b"POST /cart/items?x=1&y=%2F HTTP/1.1\r\nHost: shop.example\r\n"
            b"Cookie: session_id=user-7; theme=dark\r\nAuthorization: Basic c2VjcmV0\r\n"
            b"X-Other: y\r\nX-User-Id: 999\r\nX-Request-Id: rid-1\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        assert reply.status == 200
    (asked,) = setup.auth.requests
    assert asked.request_line == "GET /session/whoami HTTP/1.1"
    assert asked.body == b""
    headers = dict(asked.headers)
    # Each once: a list, since a dict would hide a repeated name.
    assert sorted(name for name, _ in asked.headers) == [
        "cookie",
        "host",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-method",
        "x-forwarded-proto",
        "x-forwarded-uri",
        "x-request-id",
    ]
    assert headers["host"] == f"127.0.0.1:{setup.auth.port}"
    assert headers["cookie"] == "session_id=user-7; theme=dark"
    assert headers["x-forwarded-method"] == "POST"
    assert headers["x-forwarded-uri"] == "/cart/items?x=1&y=%2F"
    assert headers["x-forwarded-host"] == "shop.example"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == "rid-1"


# ---- what the backend gets ---------------------------------------------------------------------


def test_an_allow_sends_the_authorizers_identity_headers_and_never_the_clients(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        reply = setup.get("/cart", headers={"Cookie": "session_id=user-7", "X-User-Id": "999"})
    headers = backend_headers(reply)
    assert [v for n, v in headers if n == "x-user-id"] == ["7"]
    # Only the names upstream_headers lists are copied.
    assert [v for n, v in headers if n == "x-user-roles"] == []
    assert [v for n, v in headers if n == "cookie"] == ["session_id=user-7"]


@pytest.mark.parametrize(
    ("cookie", "why"),
    [(None, "no identity"), ("session_id=expired", "denied"), ("session_id=redirect", "denied")],
)
def test_an_optional_route_goes_on_unauthenticated_without_the_clients_identity_headers(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream], cookie: str | None, why: str
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        client = RawClient(setup.port)
        lines = [b"GET /account HTTP/1.1", b"Host: gw", b"X-User-Id: 1", b"x-user-id: 2"]
        if cookie is not None:
            lines.append(b"Cookie: " + cookie.encode())
        reply = client.request(b"\r\n".join(lines) + b"\r\n\r\n")
    assert reply.status == 200, why
    headers = json.loads(reply.body)["headers"]
    assert [v for n, v in headers if n == "x-user-id"] == []  # both spellings the client sent
    assert len(setup.auth.requests) == (0 if cookie is None else 1)


def test_the_identity_reaches_the_backend_on_every_request_of_a_keep_alive_connection(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    """Two users on one connection (a proxy in front of the gateway pools connections): each
    request gets its own identity, never the previous one's."""
    with gateway(tmp_path, upstreams, ttl="60s") as setup:
        client = RawClient(setup.port)
        seen = []
        for uid in ("1", "2", "1", "3", "2") * 4:
            reply = client.request(
                b"GET /cart HTTP/1.1\r\nHost: gw\r\nCookie: session_id=user-"
                + uid.encode()
                + b"\r\n\r\n"
            )
            seen.append([v for n, v in json.loads(reply.body)["headers"] if n == "x-user-id"])
    assert seen == [[uid] for uid in ("1", "2", "1", "3", "2") * 4]
    assert len(setup.auth.requests) == 3


# ---- denials and failures ----------------------------------------------------------------------


def test_a_denial_is_relayed_as_the_authorizer_sent_it_and_no_backend_is_called(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        client = RawClient(setup.port)
        reply = client.request(
            b"GET /cart HTTP/1.1\r\nHost: gw\r\nCookie: session_id=redirect\r\n"
            b"X-Request-Id: rid-9\r\n\r\n"
        )
        assert (reply.status, reply.body) == (302, b"go log in")
        assert reply.headers == [
            ("location", "/login?next=%2Fcart"),
            ("set-cookie", "back=1; Path=/"),
            ("x-request-id", "rid-9"),
            ("content-length", "9"),
        ]
        expired = client.request(
            b"GET /cart HTTP/1.1\r\nHost: gw\r\nCookie: session_id=expired\r\n\r\n"
        )
        assert expired.status == 401
        assert json.loads(expired.body) == {"error": "not_logged_in"}
        assert expired.header("www-authenticate") == ["Cookie"]
        assert setup.results() == {
            "allow": 0.0, "deny": 2.0, "unauthenticated": 0.0, "error": 0.0, "cached": 0.0,
        }  # fmt: skip
    assert setup.backend.requests == []


def test_a_request_without_the_identity_is_401_and_the_authorizer_is_not_called(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        reply = setup.get("/cart", headers={"X-Request-Id": "rid-2", "Cookie": "theme=dark"})
        assert reply.status_code == 401
        assert reply.json() == {
            "error": "unauthorized",
            "message": "this route needs an identity the request lacks",
            "request_id": "rid-2",
        }
        assert setup.results()["unauthenticated"] == 1.0
    assert setup.auth.requests == []
    assert setup.backend.requests == []


@pytest.mark.parametrize("who", ["slow", "huge", "refused", "broken"])
def test_an_authorizer_that_fails_is_503_and_never_an_allow(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream], who: str
) -> None:
    auth, backend = upstreams
    url = f"http://127.0.0.1:{free_port()}" if who == "refused" else auth.url
    config = table(tmp_path, url, backend.url, timeout="300ms")
    with running_gateway(config, access_log="off") as (_, servers):
        for path in ("/cart", "/account"):  # optional or not: a failure stops the request
            reply = httpx.get(
                f"{servers.url('gateway')}{path}",
                headers={"Cookie": f"session_id={who}", "X-Request-Id": "rid-3"},
                timeout=10,
            )
            assert reply.status_code == 503
            assert reply.json()["error"] == "authorizer_unavailable"
            assert reply.json()["request_id"] == "rid-3"
    assert backend.requests == []


# ---- the cache and single flight ---------------------------------------------------------------


def test_answers_are_cached_per_identity_and_failures_are_not(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams, ttl="60s") as setup:
        sessions = ["user-1"] * 5 + ["user-2"] * 3 + ["expired"] * 3
        sessions += ["redirect"] * 2 + ["broken"] * 3
        for cookie in sessions:
            setup.get("/cart", headers={"Cookie": f"session_id={cookie}"})
        asked = [r.header("cookie")[0] for r in setup.auth.requests]
        # One call per user and for the 401 (cached); each 302 and each 500 asked again.
        assert asked == [
            "session_id=user-1", "session_id=user-2", "session_id=expired",
            *["session_id=redirect"] * 2, *["session_id=broken"] * 3,
        ]  # fmt: skip
        assert setup.results() == {
            "allow": 2.0, "deny": 3.0, "unauthenticated": 0.0, "error": 3.0, "cached": 8.0,
        }  # fmt: skip


def test_without_a_ttl_every_request_asks(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    with gateway(tmp_path, upstreams) as setup:
        for _ in range(4):
            setup.get("/cart", headers={"Cookie": "session_id=user-1"})
    assert len(setup.auth.requests) == 4


@pytest.mark.parametrize("ttl", ["60s", "0s"])
def test_concurrent_requests_of_one_identity_share_one_call_when_cached(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream], ttl: str
) -> None:
    """20 requests at once for each of two users, on an authorizer that takes 0.4 s: with a
    TTL, one call per user and every answer the user's own; without one, a call each."""
    with gateway(tmp_path, upstreams, ttl=ttl) as setup:
        users = ["wait-a", "wait-b"] * 20
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            replies = list(
                pool.map(
                    lambda who: setup.get("/cart", headers={"Cookie": f"session_id={who}"}),
                    users,
                )
            )
        got = [[v for n, v in backend_headers(r) if n == "x-user-id"] for r in replies]
        assert got == [[who] for who in users]
        calls = len(setup.auth.requests)
        if ttl == "60s":
            assert calls == 2
            assert setup.results()["cached"] == 38.0
        else:
            assert calls == 40
            assert setup.results()["allow"] == 40.0


# ---- Lambda authorizers ------------------------------------------------------------------------


def function_table(tmp_path: Path, backend: str) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""\
version: 1
backends:
  app: {{url: "{backend}", kind: legacy}}
  fn: {{function: "tests.functions:echo"}}
authorizers:
  tokens:
    function: tests.functions:authorize
    identity: [header:Authorization]
    timeout: 300ms
    context_headers: {{sub: X-User-Id, roles: X-Roles}}
routes:
  - {{name: app, match: {{path: /app}}, backend: app, authorizer: tokens}}
  - {{name: fn, match: {{path: "/fn/{{id}}"}}, backend: fn, authorizer: tokens}}
"""
    )
    return config


def test_a_lambda_authorizer_gets_api_gateways_event_and_its_context_reaches_every_backend(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    _, backend = upstreams
    functions.authorizer_events.clear()
    with running_gateway(function_table(tmp_path, backend.url), access_log="off") as (_, s):
        url = s.url("gateway")
        good = {"Authorization": "Bearer good", "X-User-Id": "spoofed", "X-Roles": "root"}
        through_url = httpx.get(f"{url}/app?q=1", headers=good)
        through_function = httpx.get(f"{url}/fn/42?q=1", headers=good)
    headers = backend_headers(through_url)
    assert [v for n, v in headers if n in ("x-user-id", "x-roles")] == ["user-7", '["a","b"]']
    event = through_function.json()["event"]
    assert event["requestContext"]["authorizer"] == {
        "lambda": {"sub": "user-7", "roles": ["a", "b"], "n": 3}
    }
    assert event["headers"]["x-user-id"] == "user-7"
    asked = functions.authorizer_events[-1]
    assert {k: asked[k] for k in ("version", "type", "identitySource", "routeKey", "rawPath")} == {
        "version": "2.0",
        "type": "REQUEST",
        "identitySource": ["Bearer good"],
        "routeKey": "ANY /fn/{id}",
        "rawPath": "/fn/42",
    }
    assert (
        asked["routeArn"] == "arn:aws:execute-api:local:000000000000:strangler/$default/GET/fn/42"
    )
    assert asked["pathParameters"] == {"id": "42"}
    assert asked["rawQueryString"] == "q=1"
    assert asked["headers"]["authorization"] == "Bearer good"
    assert "x-user-id" not in asked["headers"]  # the client's, removed before anyone sees it
    assert "body" not in asked
    assert "isBase64Encoded" not in asked


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        ("Bearer nobody", 403, "forbidden"),
        ("Bearer raise", 503, "authorizer_unavailable"),
        ("Bearer nonsense", 503, "authorizer_unavailable"),
        ("Bearer string", 503, "authorizer_unavailable"),
        ("Bearer bad-header", 503, "authorizer_unavailable"),
        ("Bearer slow", 503, "authorizer_unavailable"),
    ],
)
def test_a_lambda_authorizer_that_denies_or_fails_stops_the_request(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream], token: str, status: int, code: str
) -> None:
    _, backend = upstreams
    with running_gateway(function_table(tmp_path, backend.url), access_log="off") as (_, s):
        reply = httpx.get(f"{s.url('gateway')}/app", headers={"Authorization": token})
    assert (reply.status_code, reply.json()["error"]) == (status, code)
    assert backend.requests == []


# ---- reloads ----------------------------------------------------------------------------------


def test_a_reload_keeps_an_unchanged_authorizers_cache_and_drops_a_changed_ones(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    auth, backend = upstreams
    config = table(tmp_path, auth.url, backend.url, ttl="60s")
    with running_gateway(config, access_log="off") as (_, servers):
        admin = servers.url("admin")

        def ask() -> None:
            reply = httpx.get(
                f"{servers.url('gateway')}/cart", headers={"Cookie": "session_id=user-1"}
            )
            assert reply.status_code == 200

        def reload() -> None:
            assert httpx.post(f"{admin}/reload", json={}).status_code == 200

        ask()
        config.write_text(
            config.read_text() + "  - {name: more, match: {path: /more}, backend: app}\n"
        )
        reload()
        ask()
        assert len(auth.requests) == 1  # the same authorizer, its cache kept
        config.write_text(config.read_text().replace("ttl: 60s", "ttl: 59s"))
        reload()
        ask()
        assert len(auth.requests) == 2  # changed settings: a new cache
        # An authorizer the table drops takes its series with it.
        config.write_text(
            config.read_text()
            .replace(", authorizer: session", "")
            .replace("\n     optional: true", "")
            .replace("authorizers:\n  session:", "authorizers:\n  renamed:")
        )
        reload()
        text = httpx.get(f"{admin}/metrics").text
    assert 'authorizer="session"' not in text
    assert 'strangler_authorizer_requests_total{authorizer="renamed",result="allow"} 0.0' in text
