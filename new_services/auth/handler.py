"""Login, logout and the current user, migrated from the monolith.

Routes (behind the gateway's ``/auth`` route): ``POST /auth/login`` (JSON or form
``username``, ``password``), ``POST /auth/logout``, ``GET /auth/me``. Sessions are the
monolith's signed cookie (see common/session.py), so a session made by either side is valid on
the other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from typing import Any

from new_services.common import http, session
from new_services.common.entry import EntryPoint
from new_services.common.storage import Store, data_dir, seed

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE, "
    "name TEXT, email TEXT, password_hash TEXT)",
)


def _fill(connection: sqlite3.Connection) -> None:
    for user in seed()["users"]:
        connection.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
            (user["id"], user["username"], user["name"], user["email"], user["password_hash"]),
        )


def check_password(password: str, stored: str) -> bool:
    """The monolith's hash format: ``pbkdf2_sha256$ROUNDS$SALT$HEX``."""
    try:
        _, rounds, salt, digest = stored.split("$")
    except ValueError:
        return False
    computed = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(rounds))
    return hmac.compare_digest(computed.hex(), digest)


def _public(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "username": row["username"],
        "name": row["name"],
        "email": row["email"],
    }


class Auth:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, event: http.Event, context: Any) -> http.Response:
        method, path = http.method(event), http.path(event)
        if path == "/auth/login":
            return self.login(event) if method == "POST" else http.method_not_allowed("POST")
        if path == "/auth/logout":
            return self.logout() if method == "POST" else http.method_not_allowed("POST")
        if path == "/auth/me":
            return (
                self.me(event)
                if method in ("GET", "HEAD")
                else http.method_not_allowed("GET, HEAD")
            )
        return http.not_found()

    def login(self, event: http.Event) -> http.Response:
        fields = http.fields(event)
        username, password = str(fields.get("username", "")), str(fields.get("password", ""))
        with self.store.connect() as db:
            row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        if row is None or not check_password(password, row["password_hash"]):
            return http.error(401, "invalid_credentials", "unknown user or wrong password")
        return http.json_response(
            200,
            {"user": _public(row)},
            cookies=[
                http.set_cookie(
                    session.COOKIE,
                    session.make(row["id"]),
                    max_age=session.TTL,
                    httponly=True,
                    samesite="lax",
                ),
                http.set_cookie("csrf_token", secrets.token_hex(16), samesite="strict"),
            ],
        )

    def logout(self) -> http.Response:
        return {
            "statusCode": 204,
            "cookies": [
                http.delete_cookie(session.COOKIE, httponly=True, samesite="lax"),
                http.delete_cookie("csrf_token", samesite="strict"),
            ],
        }

    def me(self, event: http.Event) -> http.Response:
        user_id = session.read(http.cookie(event, session.COOKIE))
        row = None
        if user_id is not None:
            with self.store.connect() as db:
                row = db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return http.error(401, "not_logged_in", "log in first")
        return http.json_response(200, {"user": _public(row)})


handler = EntryPoint(lambda: Auth(Store(data_dir() / "auth.sqlite3", SCHEMA, _fill)))
