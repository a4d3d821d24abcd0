"""Parity: the same requests through a gateway that sends everything to the monolith, and
through one that sends the migrated paths to their functions, get the same answers.

In-process (ASGI all the way down): what is compared is behaviour, not sockets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.export import export
from new_services.auth import handler as auth_handler
from new_services.cart import handler as cart_handler
from new_services.catalog import handler as catalog_handler
from new_services.common import session
from new_services.common.storage import seed
from proxy.app import create_app
from proxy.settings import Settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

LEGACY_TABLE = """\
version: 1
backends:
  monolith: {url: "http://monolith", kind: legacy}
routes:
  - {name: everything-else, match: {path: /}, backend: monolith}
"""

MIGRATED_TABLE = """\
version: 1
backends:
  monolith: {url: "http://monolith", kind: legacy}
  auth: {function: "new_services.auth.handler:handler"}
  catalog: {function: "new_services.catalog.handler:handler"}
  cart: {function: "new_services.cart.handler:handler"}
authorizers:
  legacy-session:
    url: http://monolith/session/whoami
    identity: [cookie:session_id]
    upstream_headers: [X-User-Id]
routes:
  - {name: everything-else, match: {path: /}, backend: monolith}
  - {name: auth, match: {path: /auth}, backend: auth}
  - {name: catalog, match: {path: /products}, backend: catalog,
     fallback: {backend: monolith, statuses: [404]}}
  - {name: cart, match: {path: /cart}, backend: cart, authorizer: legacy-session,
     optional: true}
  - {name: orders, match: {path: /orders}, backend: cart, authorizer: legacy-session,
     optional: true}
"""

# The requests of a shopping session, in order; both sides must answer each the same way.
SESSION: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/products", {}),
    ("GET", "/products?category=books&per_page=2&page=2", {}),
    ("GET", "/products?sort=-price&per_page=5", {}),
    ("GET", "/products?sort=name&min_price=2000&max_price=5000", {}),
    ("GET", "/products?q=KETTLE", {}),
    ("GET", "/products?page=x", {}),
    ("GET", "/products?sort=colour", {}),
    ("GET", "/products?per_page=500&page=0", {}),
    ("GET", "/products/7", {}),
    ("GET", "/products/999", {}),
    ("GET", "/products/abc", {}),
    ("GET", "/products/7/image", {}),
    ("HEAD", "/products/7", {}),
    ("GET", "/auth/me", {}),
    ("POST", "/auth/login", {"json": {"username": "bob", "password": "wrong"}}),
    ("POST", "/auth/login", {"data": {"username": "bob", "password": "bob-password"}}),
    ("GET", "/auth/me", {}),
    ("GET", "/cart", {}),
    ("POST", "/cart/items", {"json": {"product_id": 4, "quantity": 2}}),
    ("POST", "/cart/items", {"json": {"product_id": 999}}),
    ("POST", "/cart", {"json": {"product_id": 5}}),
    ("DELETE", "/cart/items/5", {}),
    ("POST", "/orders", {}),
    ("GET", "/orders", {}),
    ("GET", "/orders/1001", {}),
    ("GET", "/orders/1002", {}),
    ("POST", "/orders", {}),
    ("POST", "/auth/logout", {}),
    ("GET", "/cart", {}),
    ("DELETE", "/cart/items/4", {}),
]

COMPARED_HEADERS = ("content-type", "etag", "cache-control", "location")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[tuple[str, list[str]]]
    body: Any


def answer(response: httpx.Response) -> Answer:
    content_type = response.headers.get("content-type", "")
    body: Any = json.loads(response.content) if "json" in content_type else response.content
    cookies = []
    for line in response.headers.get_list("set-cookie"):
        name = line.split("=", 1)[0]
        # Values differ by nature (random CSRF tokens, signing time); the attributes must not.
        attributes = sorted(
            part.strip() for part in line.split(";")[1:] if not part.strip().startswith("expires")
        )
        cookies.append((name, attributes))
    return Answer(
        response.status_code,
        {name: response.headers[name] for name in COMPARED_HEADERS if name in response.headers},
        cookies,
        body,
    )


@dataclass
class Sides:
    legacy: httpx.AsyncClient
    migrated: httpx.AsyncClient


@pytest.fixture
async def sides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sides]:
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SHOP_SESSION_SECRET", "parity-secret")
    for module in (auth_handler, cart_handler, catalog_handler):
        monkeypatch.setattr(module.handler, "_service", None)
    clients = []
    for name, text in (("legacy", LEGACY_TABLE), ("migrated", MIGRATED_TABLE)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(text)
        application = create_app(
            Settings(config=str(config)), transport=httpx.ASGITransport(app=create_monolith())
        )
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application.public),
                base_url="http://shop.test",
            )
        )
    yield Sides(*clients)
    for client in clients:
        await client.aclose()


async def test_a_shopping_session_gets_the_same_answers_from_both_sides(sides: Sides) -> None:
    etags: dict[str, str] = {}
    for method, target, options in SESSION:
        headers = {"if-none-match": etags["/products/7"]} if target in etags else {}
        legacy = await sides.legacy.request(method, target, headers=headers, **options)
        migrated = await sides.migrated.request(method, target, headers=headers, **options)
        assert answer(migrated) == answer(legacy), f"{method} {target}"
        if "etag" in legacy.headers:
            etags[target] = legacy.headers["etag"]
    # The conditional request was made and answered 304 on both sides.
    again = await sides.migrated.get("/products/7", headers={"if-none-match": etags["/products/7"]})
    assert again.status_code == 304


async def test_a_session_made_on_one_side_is_valid_on_the_other(sides: Sides) -> None:
    login = {"username": "carol", "password": "carol-password"}
    new_session = (await sides.migrated.post("/auth/login", json=login)).cookies["session_id"]
    old_session = (await sides.legacy.post("/auth/login", json=login)).cookies["session_id"]
    # Each request below carries exactly one session cookie: the one under test.
    sides.legacy.cookies.clear()
    sides.migrated.cookies.clear()

    async def user_on(client: httpx.AsyncClient, path: str, token: str) -> int:
        response = await client.get(path, headers={"cookie": f"session_id={token}"})
        return response.status_code

    # The function's session opens the monolith's cart, and the monolith's the function's.
    assert await user_on(sides.legacy, "/cart", new_session) == 200
    assert await user_on(sides.migrated, "/auth/me", old_session) == 200
    assert await user_on(sides.migrated, "/cart", old_session) == 200
    forged = session.make(3, key="another-secret")
    assert await user_on(sides.migrated, "/auth/me", forged) == 401
    assert await user_on(sides.legacy, "/auth/me", forged) == 401


def test_the_new_services_are_seeded_from_the_monolith_export() -> None:
    # Regenerate with: python -m legacy_monolith.export > new_services/common/seed.json
    assert seed() == json.loads(json.dumps(export()))


def test_new_services_never_import_the_gateway() -> None:
    sources = sorted((ROOT / "new_services").rglob("*.py"))
    assert sources
    for source in sources:
        text = source.read_text()
        assert "import proxy" not in text, source
        assert "from proxy" not in text, source
    probe = (
        "import sys, new_services.auth.handler, new_services.catalog.handler, "
        "new_services.cart.handler; "
        "print(sorted(m for m in sys.modules if m == 'proxy' or m.startswith('proxy.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
