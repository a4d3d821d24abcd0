"""The auth service's Lambda authorizer (docs/authorizers.md): who a session token belongs to.

An API Gateway HTTP API authorizer with simple responses: the event's ``identitySource`` holds
the session token (the ``session_id`` cookie, or an ``Authorization: Bearer`` header), and the
answer is ``{"isAuthorized": ..., "context": {"id": ..., "username": ...}}``. It is what the
gateway asks once login has moved to the new service and the monolith's ``/session/whoami``
goes (the "move login itself" step of docs/authorizers.md): the same identity context, so the
routes behind it do not change.
"""

from __future__ import annotations

from typing import Any

from new_services.common import session
from new_services.common.storage import seed


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sources = event.get("identitySource") or [""]
    token = sources[0].removeprefix("Bearer ").strip()
    user_id = session.read(token)
    user = next((u for u in seed()["users"] if u["id"] == user_id), None)
    if user is None:
        return {"isAuthorized": False}
    return {
        "isAuthorized": True,
        "context": {key: user[key] for key in ("id", "username", "name", "email")},
    }
