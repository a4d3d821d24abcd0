"""The function backend of the benchmark's function scenario: a Lambda handler that answers a
fixed 100-byte body, so the figure is the gateway's cost of invoking a function; and an
authorizer that allows everyone, for the in-process figure of an authorized route."""

from __future__ import annotations

from typing import Any

BODY = "x" * 100


async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": BODY}


async def authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The authorizer of ``bench/inprocess.py --authorized``: everyone is user 7."""
    return {"isAuthorized": True, "context": {"id": 7}}
