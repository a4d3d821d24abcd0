"""Replaying what the monolith answered against the function that replaces it
(docs/inventory.md, "Testing a replacement against the monolith's answers"): a fixture that
`strangler inventory --record` wrote, turned into the API Gateway event the function will get,
and the function's answer compared with the monolith's."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

#: Response headers that differ by nature between two servers.
UNCOMPARED = frozenset({"date", "server", "x-request-id", "content-length", "set-cookie"})


def event_from(fixture: dict[str, Any]) -> dict[str, Any]:
    """The recorded request as an HTTP API 2.0 event (redacted values stay redacted)."""
    request = fixture["request"]
    headers: dict[str, str] = {}
    for name, value in request["headers"]:
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request["path"],
        "rawQueryString": request["query"],
        "headers": headers,
        "requestContext": {
            "http": {"method": request["method"], "path": request["path"]},
            "requestId": "replay",
        },
        "isBase64Encoded": False,
    }
    body = request["body"] or {}
    if "json" in body:
        event["body"] = json.dumps(body["json"])
    elif "text" in body:
        event["body"] = body["text"]
    elif "base64" in body:
        event["body"], event["isBase64Encoded"] = body["base64"], True
    return event


def answered_alike(fixture: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """How the function's result differs from the monolith's recorded answer: status, the
    compared headers, the body (JSON structurally); an empty list when it answers alike."""
    expected = fixture["response"]
    differences = []
    if result.get("statusCode", 200) != expected["status"]:
        differences.append(f"status {result.get('statusCode')} != {expected['status']}")
    got_headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, value in expected["headers"]:
        if name not in UNCOMPARED and got_headers.get(name) != value:
            differences.append(f"header {name}: {got_headers.get(name)!r} != {value!r}")
    body = result.get("body", "")
    if result.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    recorded = expected["body"] or {}
    if "json" in recorded:
        if json.loads(body or "null") != recorded["json"]:
            differences.append("the JSON body differs")
    elif "text" in recorded and body != recorded["text"]:
        differences.append("the body differs")
    return differences


def fixtures(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
