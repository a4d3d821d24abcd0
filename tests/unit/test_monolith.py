"""The stub monolith in-process: the behaviour the new services will have to reproduce."""

from __future__ import annotations

import gzip

import httpx
import pytest

from legacy_monolith import data
from legacy_monolith.app import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def shop() -> httpx.AsyncClient:
    app = create_app(secret="test-secret")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


async def login(shop: httpx.AsyncClient, username: str = "alice") -> None:
    reply = await shop.post(
        "/auth/login", json={"username": username, "password": f"{username}-password"}
    )
    assert reply.status_code == 200


def test_seed_data_is_deterministic() -> None:
    assert data.seed_products() == data.seed_products()
    assert len(data.seed_products()) == data.PRODUCT_COUNT
    assert data.seed_products()[1] == {
        "id": 1,
        "name": "Compact Puzzle",
        "category": "games",
        "price_cents": 1236,
        "stock": 7,
        "description": "A compact puzzle from our games range.",
    }
    assert [u.username for u in data.seed_users().values()] == ["alice", "bob", "carol"]


async def test_login_sets_two_cookies_and_me_reads_the_session(shop: httpx.AsyncClient) -> None:
    reply = await shop.post("/auth/login", data={"username": "bob", "password": "bob-password"})
    assert reply.json() == {
        "user": {"id": 2, "username": "bob", "name": "Bob Baker", "email": "bob@example.com"}
    }
    cookies = reply.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("session_id=2.")
    assert "HttpOnly" in cookies[0]
    assert cookies[1].startswith("csrf_token=")
    assert (await shop.get("/auth/me")).json()["user"]["username"] == "bob"


async def test_bad_login_and_anonymous_me(shop: httpx.AsyncClient) -> None:
    reply = await shop.post("/auth/login", json={"username": "alice", "password": "nope"})
    assert (reply.status_code, reply.json()["error"]) == (401, "invalid_credentials")
    reply = await shop.get("/auth/me")
    assert (reply.status_code, reply.json()["error"]) == (401, "not_logged_in")


def test_sessions_are_signed_and_expire() -> None:
    token = data.make_session(3, "k", now=1000.0)
    assert data.read_session(token, "k", now=1000.0) == 3
    assert data.read_session(token, "other-key", now=1000.0) is None
    assert data.read_session(token, "k", now=1000.0 + data.SESSION_TTL + 1) is None
    assert data.read_session(token.replace("3.", "1.", 1), "k", now=1000.0) is None
    assert data.read_session("garbage", "k") is None


async def test_logout_clears_the_session(shop: httpx.AsyncClient) -> None:
    await login(shop)
    reply = await shop.post("/auth/logout")
    assert reply.status_code == 204
    assert any(
        "session_id=" in c and "Max-Age=0" in c for c in reply.headers.get_list("set-cookie")
    )
    assert (await shop.get("/auth/me")).status_code == 401


async def test_product_list_filters_sorts_and_pages(shop: httpx.AsyncClient) -> None:
    page = (
        await shop.get("/products", params={"category": "books", "per_page": 2, "page": 2})
    ).json()
    assert (page["page"], page["per_page"], page["total"], page["pages"]) == (2, 2, 6, 3)
    assert [p["id"] for p in page["items"]] == [15, 20]
    by_price = (await shop.get("/products", params={"sort": "-price", "per_page": 50})).json()[
        "items"
    ]
    prices = [p["price_cents"] for p in by_price]
    assert prices == sorted(prices, reverse=True)
    found = (await shop.get("/products", params={"q": "kettle"})).json()["items"]
    assert found
    assert all("kettle" in p["name"].lower() for p in found)
    assert (await shop.get("/products", params={"page": "x"})).status_code == 400
    assert (await shop.get("/products", params={"sort": "colour"})).status_code == 400


async def test_large_lists_are_gzipped_when_the_client_accepts_it(shop: httpx.AsyncClient) -> None:
    raw = await shop.get("/products", params={"per_page": 20}, headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    plain = await shop.get(
        "/products", params={"per_page": 20}, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert raw.json() == plain.json()
    assert gzip.compress(plain.content)  # the plain body is the decoded one


async def test_product_detail_etag_and_304(shop: httpx.AsyncClient) -> None:
    reply = await shop.get("/products/7")
    assert reply.json()["id"] == 7
    etag = reply.headers["etag"]
    again = await shop.get("/products/7", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert (await shop.get("/products/999")).status_code == 404
    image = await shop.get("/products/7/image")
    assert image.content == data.product_image(7)
    assert bytes(range(256)) in image.content


async def test_cart_and_orders(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/cart")).status_code == 401
    await login(shop, "carol")
    assert (await shop.post("/orders")).status_code == 409
    added = await shop.post("/cart/items", json={"product_id": 4, "quantity": 2})
    assert added.status_code == 201
    price = data.seed_products()[4]["price_cents"]
    assert added.json() == {
        "items": [{"product_id": 4, "quantity": 2, "price_cents": price}],
        "total_cents": 2 * price,
    }
    (await shop.post("/cart/items", json={"product_id": 5}))
    assert (await shop.delete("/cart/items/5")).json()["total_cents"] == 2 * price
    assert (await shop.post("/cart/items", json={"product_id": 999})).status_code == 400
    order = await shop.post("/orders")
    assert order.status_code == 201
    assert order.headers["location"] == "/orders/1001"
    assert order.json()["status"] == "placed"
    assert (await shop.get("/cart")).json() == {"items": [], "total_cents": 0}
    assert (await shop.get("/orders/1001")).json()["total_cents"] == 2 * price
    assert [o["id"] for o in (await shop.get("/orders")).json()["orders"]] == [1001]
    await login(shop, "alice")
    assert (await shop.get("/orders/1001")).status_code == 404


async def test_home_page_is_html(shop: httpx.AsyncClient) -> None:
    reply = await shop.get("/")
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "You are not logged in" in reply.text
    await login(shop)
    assert "Hello, Alice Archer" in (await shop.get("/")).text
