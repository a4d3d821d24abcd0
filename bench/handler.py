"""The function backend of the benchmark's function scenario: a Lambda handler that answers a
fixed 100-byte body, so the figure is the gateway's cost of invoking a function."""

from __future__ import annotations

from typing import Any

BODY = "x" * 100


async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": BODY}
