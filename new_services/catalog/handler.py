"""The catalogue, migrated: product list and detail, answering exactly as the monolith does.

Routes (behind the gateway's ``/products`` route): ``GET /products`` with the monolith's
filters (category, q, min_price, max_price), sort (id, price, -price, name) and pagination
(page, per_page up to 50); ``GET /products/{id}`` with ETag and 304. Not migrated yet:
``GET /products/{id}/image`` is 404 here, and the gateway falls through to the monolith for it.
Deliberate differences: see docs/functions.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from typing import Any

from new_services.common import http
from new_services.common.entry import EntryPoint
from new_services.common.storage import Store, data_dir, seed

MAX_PER_PAGE = 50
_DETAIL = re.compile(r"/products/([^/]+)\Z")
_SORTS = {
    "id": "id",
    "price": "price_cents, id",
    "-price": "price_cents DESC, id DESC",
    "name": "name, id",
}
_COLUMNS = "id, name, category, price_cents, stock, description"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, "
    "price_cents INTEGER, stock INTEGER, description TEXT, image BLOB)",
)


def _fill(connection: sqlite3.Connection) -> None:
    import base64

    data = seed()
    for product in data["products"]:
        connection.execute(
            "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                product["id"],
                product["name"],
                product["category"],
                product["price_cents"],
                product["stock"],
                product["description"],
                base64.b64decode(data["images"][str(product["id"])]),
            ),
        )


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, event: http.Event, context: Any) -> http.Response:
        method, path = http.method(event), http.path(event)
        if method not in ("GET", "HEAD"):
            return http.method_not_allowed("GET, HEAD")
        if path == "/products":
            return self.list(http.query(event))
        if found := _DETAIL.match(path):
            return self.detail(found.group(1), http.header(event, "if-none-match"))
        # Product images are not migrated yet: 404, and the gateway's route falls through to
        # the monolith for them (config/routes.yaml, docs/resilience.md).
        return http.not_found()

    def list(self, query: dict[str, str]) -> http.Response:
        try:
            page = max(1, int(query.get("page", "1")))
            per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", "10"))))
            min_price = int(query["min_price"]) if "min_price" in query else None
            max_price = int(query["max_price"]) if "max_price" in query else None
        except ValueError:
            return http.error(400, "bad_query", "page, per_page and prices are integers")
        sort = query.get("sort", "id")
        if sort not in _SORTS:
            return http.error(400, "bad_query", "sort is one of id, price, -price, name")
        where, params = ["1 = 1"], []
        if "category" in query:
            where.append("category = ?")
            params.append(query["category"])
        if "q" in query:
            where.append("instr(lower(name), ?) > 0")
            params.append(query["q"].lower())
        if min_price is not None:
            where.append("price_cents >= ?")
            params.append(min_price)
        if max_price is not None:
            where.append("price_cents <= ?")
            params.append(max_price)
        with self.store.connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM products WHERE {' AND '.join(where)} "
                f"ORDER BY {_SORTS[sort]}",
                params,
            ).fetchall()
        items = [dict(row) for row in rows]
        start = (page - 1) * per_page
        return http.json_response(
            200,
            {
                "items": items[start : start + per_page],
                "page": page,
                "per_page": per_page,
                "total": len(items),
                "pages": (len(items) + per_page - 1) // per_page,
            },
        )

    def detail(self, raw_id: str, if_none_match: str | None) -> http.Response:
        with self.store.connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM products WHERE id = ?", (http.to_int(raw_id),)
            )
            found = row.fetchone()
        if found is None:
            return http.error(404, "not_found", "no such product")
        body = json.dumps(dict(found), separators=(",", ":"))
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:16] + '"'
        headers = {"etag": etag, "cache-control": "max-age=60"}
        if if_none_match == etag:
            return {"statusCode": 304, "headers": headers}
        return {
            "statusCode": 200,
            "headers": {**headers, "content-type": "application/json"},
            "body": body,
        }


handler = EntryPoint(lambda: Catalog(Store(data_dir() / "catalog.sqlite3", SCHEMA, _fill)))
