"""The admin app in-process: health, readiness and the active table as JSON."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.settings import Settings

pytestmark = pytest.mark.anyio

TABLE = """\
version: 1
backends:
  monolith: {url: "http://127.0.0.1:8081", kind: legacy}
  catalog:
    url: "http://127.0.0.1:8082/v2"
    timeout: 5s
    circuit_breaker: {min_requests: 10, open_for: 1m}
routes:
  - name: everything-else
    match: {path: /}
    backend: monolith
  - name: catalog
    match: {path: /products, methods: [GET], host: "*.example.com", headers: {X-Beta: "1"}}
    split: {catalog: 12.5, monolith: 87.5}
    sticky: {cookie: sid, set: true}
    fallback: {backend: monolith, statuses: [503, 502]}
    retries: {attempts: 2, statuses: [503]}
"""


@pytest.fixture
def admin(tmp_path: Path) -> httpx.AsyncClient:
    config = tmp_path / "routes.yaml"
    config.write_text(TABLE)
    application = create_app(Settings(config=str(config)))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application.admin), base_url="http://127.0.0.1:9901"
    )
    client.application = application  # type: ignore[attr-defined]
    return client


async def test_healthz_and_readyz(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/healthz")).json() == {"status": "ok"}
    ready = await admin.get("/readyz")
    version = admin.application.runtime.table.version  # type: ignore[attr-defined]
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "version": version})
    admin.application.runtime.draining = True  # type: ignore[attr-defined]
    draining = await admin.get("/readyz")
    assert (draining.status_code, draining.json()) == (503, {"status": "draining"})


async def test_routes_describes_the_active_table(admin: httpx.AsyncClient, tmp_path: Path) -> None:
    body = (await admin.get("/routes")).json()
    assert body["version"] == admin.application.runtime.table.version  # type: ignore[attr-defined]
    assert body["source"] == str(tmp_path / "routes.yaml")
    assert body["loaded_at"].endswith("Z")
    assert body["routes"] == [
        {
            "name": "catalog",
            "path": "/products",
            "methods": ["GET"],
            "host": "*.example.com",
            "headers": {"x-beta": "1"},
            "backends": [
                {"name": "catalog", "kind": "new", "weight": 12.5},
                {"name": "monolith", "kind": "legacy", "weight": 87.5},
            ],
            "sticky": {"cookie": "sid", "set": True},
            "fallback": "monolith",
            "fallback_statuses": [502, 503],
            "retries": {
                "attempts": 2,
                "retry_on": ["connect_failure", "reset"],
                "statuses": [503],
                "budget": {"ratio": 0.2, "min_per_second": 10.0},
            },
            "line": 12,
        },
        {
            "name": "everything-else",
            "path": "/",
            "methods": None,
            "host": None,
            "headers": {},
            "backends": [{"name": "monolith", "kind": "legacy", "weight": 100.0}],
            "sticky": None,
            "fallback": None,
            "fallback_statuses": [],
            "retries": None,
            "line": 9,
        },
    ]
    assert body["backends"] == [
        {
            "name": "monolith",
            "kind": "legacy",
            "type": "url",
            "target": "http://127.0.0.1:8081",
            "timeout": 30.0,
            "circuit_breaker": None,
        },
        {
            "name": "catalog",
            "kind": "new",
            "type": "url",
            "target": "http://127.0.0.1:8082/v2",
            "timeout": 5.0,
            "circuit_breaker": {
                "state": "closed",
                "failure_ratio": 0.5,
                "min_requests": 10,
                "window": 10.0,
                "open_for": 60.0,
                "probes": 1,
                "window_requests": 0,
                "window_failures": 0,
            },
        },
    ]


async def test_unknown_admin_paths_and_methods(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/nope")).status_code == 404
    assert (await admin.post("/healthz")).status_code == 405


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://127.0.0.1:9901"},
    ],
)
async def test_reload_refuses_cross_site_requests(
    admin: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    reply = await admin.post("/reload", headers=headers, json={})
    assert reply.status_code == 403
    assert reply.json() == {
        "error": "forbidden",
        "message": "a cross-site request may not reload the table",
    }


async def test_reload_accepts_its_own_origin_and_plain_clients(admin: httpx.AsyncClient) -> None:
    for headers in ({}, {"origin": "http://127.0.0.1:9901", "sec-fetch-site": "same-origin"}):
        reply = await admin.post("/reload", headers=headers, json={})
        assert reply.status_code == 200
        assert reply.json()["changed"] is False


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_reload_needs_a_request_no_form_can_send(
    admin: httpx.AsyncClient, content_type: str | None
) -> None:
    # What a plain HTML form (or fetch without a CORS preflight) can send is refused.
    headers = {"content-type": content_type} if content_type else {}
    reply = await admin.post("/reload", headers=headers, content=b"")
    assert reply.status_code == 415
    assert reply.json() == {
        "error": "unsupported_media_type",
        "message": "ask for a reload with Content-Type: application/json",
    }
    charset = await admin.post(
        "/reload", headers={"content-type": "application/json; charset=utf-8"}
    )
    assert charset.status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:9901", True),
        ("localhost:9901", True),
        ("LOCALHOST.", True),
        ("[::1]:9901", True),
        ("10.1.2.3:9901", True),  # a pod's address, as Prometheus and the kubelet use
        ("strangler-admin.prod.svc", True),  # listed in --admin-allowed-hosts
        ("rebind.evil.example", False),  # a DNS-rebinding page
        ("rebind.evil.example:9901", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
async def test_the_admin_port_answers_only_to_its_own_names(
    tmp_path: Path, host: str, allowed: bool
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(TABLE)
    settings = Settings(config=str(config), admin_allowed_hosts=("strangler-admin.prod.svc",))
    application = create_app(settings)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application.admin), base_url="http://127.0.0.1"
    )
    for method, path in (("GET", "/routes"), ("GET", "/metrics"), ("POST", "/reload")):
        reply = await client.request(
            method, path, headers={"host": host, "origin": f"http://{host}"}, json={}
        )
        if allowed:
            assert reply.status_code == 200, (method, path)
        else:
            assert reply.status_code == 403
            assert reply.json() == {
                "error": "forbidden",
                "message": f"the admin port does not answer to Host {host!r}",
            }
    await client.aclose()
    await application.aclose()
