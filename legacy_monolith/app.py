"""The stub legacy monolith: a small e-commerce application (Starlette, in-memory state).

It is the "before" of a migration: users with login sessions in cookies, a product catalogue
with filters and pagination, product reviews, a cart, orders, one server-rendered HTML page
and a live page (a WebSocket ticker and an event stream, legacy_monolith/live.py). Its answers
are what the new services must reproduce. State lives in the app instance, seeded deterministically.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import secrets
import urllib.parse
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from legacy_monolith import data, live

MAX_PER_PAGE = 50


class Store:
    def __init__(self) -> None:
        self.users = data.seed_users()
        self.products = data.seed_products()
        self.reviews = data.seed_reviews()
        self.carts: dict[int, dict[int, int]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.next_order_id = 1001


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def create_app(secret: str | None = None) -> Starlette:
    store = Store()
    secret = secret or os.environ.get("SHOP_SESSION_SECRET", data.DEFAULT_SECRET)

    def current_user(request: Request) -> data.User | None:
        token = request.cookies.get(data.SESSION_COOKIE)
        user_id = data.read_session(token, secret) if token else None
        return store.users.get(user_id) if user_id is not None else None

    async def read_fields(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {}
        # Form posts are urlencoded; parsed here rather than through Starlette's form support,
        # which needs python-multipart for no gain on this content type.
        pairs = urllib.parse.parse_qsl((await request.body()).decode("utf-8", "replace"))
        return dict(pairs)

    async def home(request: Request) -> Response:
        user = current_user(request)
        rows = "\n".join(
            f'<li><a href="/products/{p["id"]}">{html.escape(str(p["name"]))}</a> '
            f"{int(p['price_cents']) / 100:.2f} EUR</li>"
            for p in list(store.products.values())[:10]
        )
        greeting = f"Hello, {html.escape(user.name)}" if user else "You are not logged in"
        page = (
            '<!doctype html>\n<html><head><meta charset="utf-8"><title>Shop</title></head>'
            f"<body><h1>Shop</h1><p>{greeting}</p><ul>\n{rows}\n</ul>"
            '<p><a href="/live">Live</a>: stock prices and an order on its way, as they '
            "change.</p></body></html>\n"
        )
        return HTMLResponse(page)

    async def login(request: Request) -> Response:
        fields = await read_fields(request)
        username, password = str(fields.get("username", "")), str(fields.get("password", ""))
        user = next((u for u in store.users.values() if u.username == username), None)
        if user is None or not data.check_password(password, user.password_hash):
            return _error(401, "invalid_credentials", "unknown user or wrong password")
        response = JSONResponse({"user": user.public()})
        response.set_cookie(
            data.SESSION_COOKIE,
            data.make_session(user.id, secret),
            max_age=data.SESSION_TTL,
            httponly=True,
            samesite="lax",
        )
        response.set_cookie("csrf_token", secrets.token_hex(16), samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(data.SESSION_COOKIE, httponly=True, samesite="lax")
        response.delete_cookie("csrf_token", samesite="strict")
        return response

    async def me(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        return JSONResponse({"user": user.public()})

    async def whoami(request: Request) -> Response:
        # The gateway's authorizer for the routes that moved (docs/authorizers.md): the
        # monolith still owns login, so it says who a session belongs to.
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        return JSONResponse(
            user.public(), headers={"X-User-Id": str(user.id), "Cache-Control": "no-store"}
        )

    async def products(request: Request) -> Response:
        query = request.query_params
        try:
            page = max(1, int(query.get("page", "1")))
            per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", "10"))))
            min_price = int(query["min_price"]) if "min_price" in query else None
            max_price = int(query["max_price"]) if "max_price" in query else None
        except ValueError:
            return _error(400, "bad_query", "page, per_page and prices are integers")
        items = list(store.products.values())
        if "category" in query:
            items = [p for p in items if p["category"] == query["category"]]
        if "q" in query:
            needle = query["q"].lower()
            items = [p for p in items if needle in str(p["name"]).lower()]
        if min_price is not None:
            items = [p for p in items if int(p["price_cents"]) >= min_price]
        if max_price is not None:
            items = [p for p in items if int(p["price_cents"]) <= max_price]
        sort = query.get("sort", "id")
        if sort not in ("id", "price", "-price", "name"):
            return _error(400, "bad_query", "sort is one of id, price, -price, name")
        key = {"id": "id", "price": "price_cents", "-price": "price_cents", "name": "name"}[sort]
        items.sort(key=lambda p: (p[key], p["id"]), reverse=sort == "-price")
        total = len(items)
        start = (page - 1) * per_page
        return JSONResponse(
            {
                "items": items[start : start + per_page],
                "page": page,
                "per_page": per_page,
                "total": total,
                "pages": (total + per_page - 1) // per_page,
            }
        )

    async def product(request: Request) -> Response:
        item = store.products.get(_int(request.path_params["id"]))
        if item is None:
            return _error(404, "not_found", "no such product")
        body = json.dumps(item, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Cache-Control": "max-age=60"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def product_image(request: Request) -> Response:
        pid = _int(request.path_params["id"])
        if pid not in store.products:
            return _error(404, "not_found", "no such product")
        return Response(data.product_image(pid), media_type="application/octet-stream")

    async def product_reviews(request: Request) -> Response:
        pid = _int(request.path_params["id"])
        if pid not in store.products:
            return _error(404, "not_found", "no such product")
        return JSONResponse(data.review_summary(pid, store.reviews[pid]))

    def cart_view(user: data.User) -> dict[str, Any]:
        cart = store.carts.get(user.id, {})
        lines = [
            {"product_id": pid, "quantity": qty, "price_cents": store.products[pid]["price_cents"]}
            for pid, qty in sorted(cart.items())
        ]
        total = sum(int(line["price_cents"]) * int(line["quantity"]) for line in lines)
        return {"items": lines, "total_cents": total}

    async def cart(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        if request.method == "GET":
            return JSONResponse(cart_view(user))
        fields = await read_fields(request)
        pid, qty = _int(fields.get("product_id")), _int(fields.get("quantity", 1))
        if pid not in store.products or qty < 1:
            return _error(400, "bad_item", "product_id must exist and quantity be at least 1")
        lines = store.carts.setdefault(user.id, {})
        lines[pid] = lines.get(pid, 0) + qty
        return JSONResponse(cart_view(user), status_code=201)

    async def cart_item(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        store.carts.get(user.id, {}).pop(_int(request.path_params["id"]), None)
        return JSONResponse(cart_view(user))

    async def orders(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        if request.method == "GET":
            mine = [o for o in store.orders.values() if o["user_id"] == user.id]
            return JSONResponse({"orders": mine})
        view = cart_view(user)
        if not view["items"]:
            return _error(409, "empty_cart", "add something to the cart first")
        order = {"id": store.next_order_id, "user_id": user.id, "status": "placed", **view}
        store.orders[store.next_order_id] = order
        store.next_order_id += 1
        store.carts.pop(user.id, None)
        return JSONResponse(order, status_code=201, headers={"Location": f"/orders/{order['id']}"})

    async def order(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return _error(401, "not_logged_in", "log in first")
        found = store.orders.get(_int(request.path_params["id"]))
        if found is None or found["user_id"] != user.id:
            return _error(404, "not_found", "no such order")
        return JSONResponse(found)

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route("/auth/login", login, methods=["POST"]),
            Route("/auth/logout", logout, methods=["POST"]),
            Route("/auth/me", me),
            Route("/session/whoami", whoami),
            Route("/products", products),
            Route("/products/{id}", product),
            Route("/products/{id}/image", product_image),
            Route("/products/{id}/reviews", product_reviews),
            Route("/cart", cart, methods=["GET", "POST"]),
            Route("/cart/items", cart, methods=["POST"]),
            Route("/cart/items/{id}", cart_item, methods=["DELETE"]),
            Route("/orders", orders, methods=["GET", "POST"]),
            Route("/orders/{id}", order),
            # /live, its WebSocket ticker and its event stream (legacy_monolith/live.py).
            *live.routes(),
        ],
        middleware=[Middleware(GZipMiddleware, minimum_size=500)],
    )


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1
