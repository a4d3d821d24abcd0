"""Deterministic seed data of the stub monolith: users, products, and the session format.

The new services are seeded from the same functions, so both sides of a migration start from
identical data. Sessions are signed tokens (not rows in a table) so that any service holding
the secret can read a session the other side created.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("books", "games", "garden", "kitchen", "tools")
_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Heavy-duty", "Vintage")
_NOUNS = {
    "books": ("Novel", "Cookbook", "Atlas"),
    "games": ("Board game", "Puzzle", "Card deck"),
    "garden": ("Trowel", "Planter", "Hose"),
    "kitchen": ("Kettle", "Skillet", "Whisk"),
    "tools": ("Hammer", "Wrench", "Screwdriver set"),
}
PRODUCT_COUNT = 30

SESSION_COOKIE = "session_id"
SESSION_TTL = 7 * 24 * 3600
DEFAULT_SECRET = "strangler-demo-session-secret"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    name: str
    email: str
    password_hash: str

    def public(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "name": self.name, "email": self.email}


def hash_password(password: str, salt: str) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1000)
    return f"pbkdf2_sha256$1000${salt}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, _, salt, _ = stored.split("$")
    return hmac.compare_digest(hash_password(password, salt), stored)


def seed_users() -> dict[int, User]:
    people = [
        (1, "alice", "Alice Archer"),
        (2, "bob", "Bob Baker"),
        (3, "carol", "Carol Carter"),
    ]
    return {
        uid: User(
            uid, login, name, f"{login}@example.com", hash_password(f"{login}-password", login)
        )
        for uid, login, name in people
    }


def seed_products() -> dict[int, dict[str, Any]]:
    products: dict[int, dict[str, Any]] = {}
    for pid in range(1, PRODUCT_COUNT + 1):
        category = CATEGORIES[pid % len(CATEGORIES)]
        noun = _NOUNS[category][pid % 3]
        adjective = _ADJECTIVES[pid % len(_ADJECTIVES)]
        products[pid] = {
            "id": pid,
            "name": f"{adjective} {noun}",
            "category": category,
            "price_cents": 499 + (pid * 737) % 9000,
            "stock": (pid * 7) % 25,
            "description": f"A {adjective.lower()} {noun.lower()} from our {category} range.",
        }
    return products


_REVIEW_TEXTS = (
    "Does what it says.",
    "Better than I expected.",
    "Arrived late, works fine.",
    "Would buy again.",
    "Not for me.",
)


def seed_reviews() -> dict[int, list[dict[str, Any]]]:
    """Every product's reviews, oldest first: none to three each, written by the seed users."""
    authors = [user.username for user in seed_users().values()]
    return {
        pid: [
            {
                "id": pid * 10 + n,
                "author": authors[(pid + n) % len(authors)],
                "rating": 1 + (pid * 3 + n * 2) % 5,
                "text": _REVIEW_TEXTS[(pid + n * 3) % len(_REVIEW_TEXTS)],
            }
            for n in range(pid % 4)
        ]
        for pid in range(1, PRODUCT_COUNT + 1)
    }


def review_summary(pid: int, reviews: list[dict[str, Any]]) -> dict[str, Any]:
    """A product's reviews as ``GET /products/{id}/reviews`` answers them."""
    ratings = [review["rating"] for review in reviews]
    return {
        "product_id": pid,
        "count": len(reviews),
        "average_rating": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "reviews": reviews,
    }


def product_image(pid: int) -> bytes:
    """A small deterministic binary body (bytes 0-255 included), standing in for an image."""
    seed = hashlib.sha256(f"product-{pid}".encode()).digest()
    return b"\x89IMG\r\n\x1a\n" + bytes(range(256)) + seed * 32


def make_session(user_id: int, secret: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + SESSION_TTL)
    payload = f"{user_id}.{expires}"
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{signature}"


def read_session(token: str, secret: str, now: float | None = None) -> int | None:
    """The user id a session token stands for, or None if it is forged or expired."""
    try:
        user_id, expires, signature = token.split(".")
        payload = f"{user_id}.{expires}"
        wanted = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(wanted, signature):
            return None
        if int(expires) < (now if now is not None else time.time()):
            return None
        return int(user_id)
    except ValueError:
        return None
