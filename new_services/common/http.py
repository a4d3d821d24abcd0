"""Reading an HTTP API 2.0 event and writing a 2.0 response, the way the monolith answers.

Responses are serialised like the monolith's (compact JSON, the same cookie formatting), so a
client cannot tell which side answered.
"""

from __future__ import annotations

import base64
import http.cookies
import json
import time
import urllib.parse
from email.utils import formatdate
from typing import Any

Event = dict[str, Any]
Response = dict[str, Any]


def method(event: Event) -> str:
    return str(event["requestContext"]["http"]["method"])


def path(event: Event) -> str:
    return str(event["rawPath"])


def query(event: Event) -> dict[str, str]:
    """The query parameters, the first value of each (as the monolith reads them)."""
    params: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(
        event.get("rawQueryString", ""), keep_blank_values=True
    ):
        params.setdefault(key, value)
    return params


def header(event: Event, name: str) -> str | None:
    value = event.get("headers", {}).get(name.lower())
    return None if value is None else str(value)


def cookie(event: Event, name: str) -> str | None:
    for pair in event.get("cookies", []):
        key, _, value = pair.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def authorized_user(event: Event) -> int | None:
    """The user id the gateway's authorizer put in the event (its identity context, as API
    Gateway passes a Lambda authorizer's), or None for a request that went on without one."""
    identity = event["requestContext"].get("authorizer", {}).get("lambda") or {}
    user_id = identity.get("id")
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None


def body_bytes(event: Event) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")


def fields(event: Event) -> dict[str, Any]:
    """The request's fields from a JSON or an urlencoded form body; {} when unreadable."""
    raw = body_bytes(event)
    if (header(event, "content-type") or "").startswith("application/json"):
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))


def json_response(
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
) -> Response:
    response: Response = {
        "statusCode": status,
        "headers": {**(headers or {}), "content-type": "application/json"},
        "body": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
    }
    if cookies:
        response["cookies"] = cookies
    return response


def error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


def binary_response(data: bytes, content_type: str) -> Response:
    return {
        "statusCode": 200,
        "headers": {"content-type": content_type},
        "body": base64.b64encode(data).decode("ascii"),
        "isBase64Encoded": True,
    }


def not_found() -> Response:
    return error(404, "not_found", "no such resource")


def method_not_allowed(allowed: str) -> Response:
    response = error(405, "method_not_allowed", f"allowed: {allowed}")
    response["headers"]["allow"] = allowed
    return response


def set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    httponly: bool = False,
    samesite: str = "lax",
    expires_now: bool = False,
) -> str:
    """A Set-Cookie value formatted exactly as the monolith formats it."""
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    jar[name] = value
    morsel = jar[name]
    if expires_now:
        morsel["expires"] = formatdate(time.time(), usegmt=True)
    if max_age is not None:
        morsel["max-age"] = max_age
    morsel["path"] = "/"
    if httponly:
        morsel["httponly"] = True
    morsel["samesite"] = samesite
    return morsel.OutputString()


def delete_cookie(name: str, *, httponly: bool = False, samesite: str = "lax") -> str:
    return set_cookie(name, "", max_age=0, httponly=httponly, samesite=samesite, expires_now=True)


def to_int(value: object) -> int:
    """An id from a path or a field; -1 (never an id) when it is not a number."""
    try:
        return int(str(value))
    except ValueError:
        return -1
