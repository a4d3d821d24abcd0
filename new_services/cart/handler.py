"""The cart and checkout, migrated: the first write path out of the monolith.

Routes (behind the gateway's ``/cart`` and ``/orders`` routes, which must move together: an
order is placed from the cart): ``GET|POST /cart``, ``POST /cart/items``, ``DELETE
/cart/items/{id}``, ``GET|POST /orders``, ``GET /orders/{id}``. The user comes from the
monolith's session cookie.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from new_services.common import http
from new_services.common.entry import EntryPoint
from new_services.common.storage import Store, data_dir, seed

FIRST_ORDER_ID = 1001
_ITEM = re.compile(r"/cart/items/([^/]+)\Z")
_ORDER = re.compile(r"/orders/([^/]+)\Z")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS prices (product_id INTEGER PRIMARY KEY, price_cents INTEGER)",
    "CREATE TABLE IF NOT EXISTS cart_lines (user_id INTEGER, product_id INTEGER, "
    "quantity INTEGER, PRIMARY KEY (user_id, product_id))",
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id INTEGER, document TEXT)",
)


def _fill(connection: sqlite3.Connection) -> None:
    for product in seed()["products"]:
        connection.execute(
            "INSERT INTO prices VALUES (?, ?)", (product["id"], product["price_cents"])
        )


class Cart:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, event: http.Event, context: Any) -> http.Response:
        user_id = http.authorized_user(event)
        method, path = http.method(event), http.path(event)
        routes = {
            "/cart": ("GET, POST", ("GET", "POST")),
            "/cart/items": ("POST", ("POST",)),
            "/orders": ("GET, POST", ("GET", "POST")),
        }
        if path in routes:
            allowed, methods = routes[path]
            if method not in methods and not (method == "HEAD" and "GET" in methods):
                return http.method_not_allowed(allowed)
        elif (item := _ITEM.match(path)) is not None:
            if method != "DELETE":
                return http.method_not_allowed("DELETE")
        elif (order := _ORDER.match(path)) is None:
            return http.not_found()
        elif method not in ("GET", "HEAD"):
            return http.method_not_allowed("GET, HEAD")
        if user_id is None:
            return http.error(401, "not_logged_in", "log in first")
        with self.store.connect() as db:
            if path in ("/cart", "/cart/items"):
                if method in ("GET", "HEAD"):
                    return http.json_response(200, _cart(db, user_id))
                return self.add(db, user_id, http.fields(event))
            if path == "/orders":
                if method in ("GET", "HEAD"):
                    return http.json_response(200, {"orders": _orders(db, user_id)})
                return self.checkout(db, user_id)
            if item is not None:
                db.execute(
                    "DELETE FROM cart_lines WHERE user_id = ? AND product_id = ?",
                    (user_id, http.to_int(item.group(1))),
                )
                return http.json_response(200, _cart(db, user_id))
            return self.order(db, user_id, http.to_int(order.group(1)))

    def add(self, db: sqlite3.Connection, user_id: int, fields: dict[str, Any]) -> http.Response:
        product_id, quantity = (
            http.to_int(fields.get("product_id")),
            http.to_int(fields.get("quantity", 1)),
        )
        known = db.execute("SELECT 1 FROM prices WHERE product_id = ?", (product_id,)).fetchone()
        if known is None or quantity < 1:
            return http.error(400, "bad_item", "product_id must exist and quantity be at least 1")
        db.execute(
            "INSERT INTO cart_lines VALUES (?, ?, ?) ON CONFLICT (user_id, product_id) "
            "DO UPDATE SET quantity = quantity + excluded.quantity",
            (user_id, product_id, quantity),
        )
        return http.json_response(201, _cart(db, user_id))

    def checkout(self, db: sqlite3.Connection, user_id: int) -> http.Response:
        cart = _cart(db, user_id)
        if not cart["items"]:
            return http.error(409, "empty_cart", "add something to the cart first")
        last = db.execute("SELECT max(id) FROM orders").fetchone()[0]
        order_id = FIRST_ORDER_ID if last is None else last + 1
        order = {"id": order_id, "user_id": user_id, "status": "placed", **cart}
        db.execute("INSERT INTO orders VALUES (?, ?, ?)", (order_id, user_id, json.dumps(order)))
        db.execute("DELETE FROM cart_lines WHERE user_id = ?", (user_id,))
        return http.json_response(201, order, headers={"location": f"/orders/{order_id}"})

    def order(self, db: sqlite3.Connection, user_id: int, order_id: int) -> http.Response:
        row = db.execute(
            "SELECT document FROM orders WHERE id = ? AND user_id = ?", (order_id, user_id)
        ).fetchone()
        if row is None:
            return http.error(404, "not_found", "no such order")
        return http.json_response(200, json.loads(row["document"]))


def _cart(db: sqlite3.Connection, user_id: int) -> dict[str, Any]:
    rows = db.execute(
        "SELECT c.product_id, c.quantity, p.price_cents FROM cart_lines c "
        "JOIN prices p USING (product_id) WHERE c.user_id = ? ORDER BY c.product_id",
        (user_id,),
    ).fetchall()
    items = [dict(row) for row in rows]
    return {
        "items": items,
        "total_cents": sum(line["price_cents"] * line["quantity"] for line in items),
    }


def _orders(db: sqlite3.Connection, user_id: int) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT document FROM orders WHERE user_id = ? ORDER BY id", (user_id,)
    ).fetchall()
    return [json.loads(row["document"]) for row in rows]


handler = EntryPoint(lambda: Cart(Store(data_dir() / "cart.sqlite3", SCHEMA, _fill)))
