"""The session cookie both sides of the migration read and write.

The monolith's format, kept exactly: ``USER_ID.EXPIRES.SIGNATURE``, where SIGNATURE is the
first 32 hex digits of HMAC-SHA256(secret, "USER_ID.EXPIRES"). The secret comes from
``SHOP_SESSION_SECRET`` on both sides, so a user logged in through either stays logged in on
the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

COOKIE = "session_id"
TTL = 7 * 24 * 3600
DEFAULT_SECRET = "strangler-demo-session-secret"


def secret() -> str:
    return os.environ.get("SHOP_SESSION_SECRET", DEFAULT_SECRET)


def _sign(payload: str, key: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def make(user_id: int, key: str | None = None, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + TTL)
    payload = f"{user_id}.{expires}"
    return f"{payload}.{_sign(payload, key or secret())}"


def read(token: str | None, key: str | None = None, now: float | None = None) -> int | None:
    """The user id a token stands for, or None when it is missing, forged or expired."""
    if not token:
        return None
    try:
        user_id, expires, signature = token.split(".")
        if not hmac.compare_digest(_sign(f"{user_id}.{expires}", key or secret()), signature):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        return int(user_id)
    except ValueError:
        return None
