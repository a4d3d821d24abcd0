"""Lambda handlers for the tests, one per behaviour, loaded by reference from routing tables
(``tests.functions:NAME``)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from typing import Any

#: Released by tests to let ``blocking`` return.
release = threading.Event()
seen_events: list[dict[str, Any]] = []


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Returns the event it got, with what the context said."""
    seen_events.append(event)
    return {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }


async def async_echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"statusCode": 202, "body": event["rawPath"], "headers": {"x-async": "yes"}}


def structured(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 201,
        "headers": {"content-type": "text/plain", "x-one": "1", "x-number": 7},
        "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
        "body": "created",
    }


def binary(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/octet-stream"},
        "body": base64.b64encode(bytes(range(256))).decode(),
        "isBase64Encoded": True,
    }


def plain_string(event: dict[str, Any], context: Any) -> str:
    return "Hello from Lambda!"


def plain_dict(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"message": "Hello from Lambda!"}


def no_content(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 204, "body": "ignored"}


def raises(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("the handler broke")


def bad_status(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": "200", "body": "x"}


def not_json(event: dict[str, Any], context: Any) -> object:
    return object()


def sleeps(event: dict[str, Any], context: Any) -> str:
    time.sleep(float(event.get("queryStringParameters", {}).get("s", "5")))
    return "woke up"


async def async_sleeps(event: dict[str, Any], context: Any) -> str:
    await asyncio.sleep(30)
    return "woke up"


def blocking(event: dict[str, Any], context: Any) -> str:
    """Blocks its thread until a test releases it (at most 20 s)."""
    release.wait(20)
    return "released"


def interim_status(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A 1xx is no answer: sent as one, the client would read the next response as this one's."""
    return {"statusCode": 100, "body": ""}


#: The events the authorizers below were called with.
authorizer_events: list[dict[str, Any]] = []


def authorize(event: dict[str, Any], context: Any) -> object:
    """A Lambda authorizer (simple responses) whose answer the token decides."""
    authorizer_events.append(event)
    token = event["identitySource"][0]
    if token == "Bearer good":
        return {"isAuthorized": True, "context": {"sub": "user-7", "roles": ["a", "b"], "n": 3}}
    if token == "Bearer no-context":
        return {"isAuthorized": True}
    if token == "Bearer bad-header":
        return {"isAuthorized": True, "context": {"sub": "x\r\nInjected: 1"}}
    if token == "Bearer raise":
        raise RuntimeError("the token service is down")
    if token == "Bearer nonsense":
        return {"allowed": True}
    if token == "Bearer string":
        return "yes"
    if token == "Bearer slow":
        time.sleep(1.0)
        return {"isAuthorized": True}
    return {"isAuthorized": False}
