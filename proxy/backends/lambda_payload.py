"""API Gateway's HTTP API payload format 2.0, both ways (docs/functions.md).

:func:`build_event` turns a request into the event a Lambda handler receives behind an HTTP
API, with API Gateway's own rules for what the gateway's model does not say directly: which
bodies travel base64, the decoded ``rawPath``, the ``{proxy+}`` route key of a prefix route and
a request id of its own (docs/functions.md, "Fidelity with API Gateway"). :func:`parse_result`
turns what the handler returned into status, headers and body bytes, including 2.0's inference
for a result without ``statusCode``. Shared by the in-process and the remote function backends;
no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from proxy.asgi import RawHeaders
from proxy.backends.base import ProxyRequest
from proxy.errors import BadFunctionResponse

ACCOUNT_ID = "000000000000"
API_ID = "strangler"

_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
# The media types (lower-cased, without parameters) whose bodies an HTTP API passes as text;
# every other body, forms and bodies without a type included, arrives base64 (docs/functions.md,
# "Request bodies").
_TEXT_TYPES = re.compile(
    rf"text/{_TOKEN}|application/(?:json|xml|javascript)|{_TOKEN}/{_TOKEN}\+(?:json|xml)"
)
#: Bytes of random in a generated ``requestContext.requestId``: 11 make 16 base64 characters,
#: the length of API Gateway's own ids (``JhJ4pjxpIAMEJTQ=``).
REQUEST_ID_BYTES = 11
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


@dataclass(slots=True)
class FunctionResponse:
    status: int
    headers: RawHeaders
    body: bytes


def new_request_id() -> str:
    """A ``requestContext.requestId`` of the gateway's own, unique per invocation, in the
    style of API Gateway's (base64 of random bytes)."""
    return base64.b64encode(secrets.token_bytes(REQUEST_ID_BYTES)).decode("ascii")


def build_event(
    request: ProxyRequest, body: bytes, now: float | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """The 2.0 event for ``request`` with its complete ``body``; ``request_id`` is the event's
    ``requestContext.requestId`` (a new one by default: never the client's ``X-Request-Id``,
    which stays in ``headers``)."""
    now = time.time() if now is None else now
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in request.headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    raw_query = request.query.decode("latin-1")
    host = request.host or "localhost"
    route_key, path_parameters = _route(request)
    # API Gateway decodes the path it hands a function (docs/functions.md, "Paths").
    path = _decoded(request.path)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": path,
                "protocol": request.protocol,
                "sourceIp": request.client_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": new_request_id() if request_id is None else request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        params: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if path_parameters:
        event["pathParameters"] = path_parameters
    if request.identity is not None:
        # What the route's authorizer said of the caller, where API Gateway puts a Lambda
        # authorizer's context (docs/authorizers.md).
        # A copy: the context may be a cached answer, shared with the next request of the
        # same caller, and a handler may change what it is given.
        event["requestContext"]["authorizer"] = {"lambda": copy.deepcopy(request.identity)}
    # An empty body is no "body" key and isBase64Encoded false, whatever its type.
    if body:
        text = _as_text(body) if is_text_type(headers.get("content-type")) else None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def build_authorizer_event(
    request: ProxyRequest, identity: list[str], now: float | None = None
) -> dict[str, Any]:
    """The event of an HTTP API Lambda authorizer (payload 2.0, ``REQUEST``) for ``request``,
    whose identity values are ``identity``: the request's event without a body, with the
    authorizer's fields (docs/authorizers.md)."""
    event = build_event(request, b"", now)
    del event["isBase64Encoded"]
    context = event["requestContext"]
    context.pop("authorizer", None)  # an authorizer decides before there is any identity
    method, path = context["http"]["method"], event["rawPath"]
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:local:{ACCOUNT_ID}:{API_ID}/$default/{method}{path}",
        "identitySource": identity,
        **event,
    }


@dataclass(frozen=True, slots=True)
class AuthorizerAnswer:
    allowed: bool
    #: The identity context (``context``), an empty one when the answer has none.
    context: dict[str, Any]


def parse_authorizer_result(result: object) -> AuthorizerAnswer:
    """An authorizer's simple response, ``{"isAuthorized": bool, "context": {...}}``; anything
    else is a BadFunctionResponse (API Gateway answers 500 for it)."""
    if not isinstance(result, dict):
        raise BadFunctionResponse(
            "the authorizer returned an invalid response",
            detail=f"a simple response is an object, not {type(result).__name__}",
        )
    allowed = result.get("isAuthorized")
    if not isinstance(allowed, bool):
        raise BadFunctionResponse(
            "the authorizer returned an invalid response",
            detail="isAuthorized is missing or not a boolean",
        )
    context = result.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BadFunctionResponse(
            "the authorizer returned an invalid response", detail="context is not an object"
        )
    return AuthorizerAnswer(allowed, context)


def is_text_type(content_type: str | None) -> bool:
    """Whether an HTTP API passes a body of this ``Content-Type`` as text: ``text/*``,
    ``application/json``, ``application/xml``, ``application/javascript`` and any
    ``+json`` or ``+xml`` type, parameters and case aside."""
    if content_type is None:
        return False
    return _TEXT_TYPES.fullmatch(content_type.split(";", 1)[0].strip().lower()) is not None


def _as_text(body: bytes) -> str | None:
    # A text type whose bytes are not UTF-8 travels base64 rather than mangled.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _route(request: ProxyRequest) -> tuple[str, dict[str, str] | None]:
    """``routeKey`` and ``pathParameters`` as an HTTP API would give them for the same route.

    A template route is already API Gateway's route. A literal prefix is two routes there,
    ``ANY /prefix`` and ``ANY /prefix/{proxy+}``, and a route on ``/`` is ``$default``.
    """
    method, _, pattern = request.route_key.partition(" ")
    if "{" in pattern:
        parameters = {name: _decoded(value) for name, value in request.captures.items()}
        return request.route_key, parameters or None
    segments = [segment for segment in pattern.split("/") if segment]
    if not segments:
        # Whatever its methods: the catch-all has no method on API Gateway either.
        return "$default", None
    prefix = "/" + "/".join(segments)
    # The normalised path has no empty segment and matched the prefix segment by segment, so
    # what follows its first len(segments) segments is the rest.
    parts = request.path.split("/", len(segments) + 1)
    rest = parts[-1] if len(parts) == len(segments) + 2 else ""
    if not rest:
        return f"{method} {prefix}", None
    return f"{method} {prefix}/{{proxy+}}", {"proxy": _decoded(rest)}


def _decoded(text: str) -> str:
    """``text`` with its percent-escapes decoded as UTF-8; bytes that do not form UTF-8 stay
    escaped, so that nothing is replaced by U+FFFD."""
    if "%" not in text:
        return text
    data = urllib.parse.unquote_to_bytes(text)
    pieces: list[str] = []
    while True:
        try:
            pieces.append(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            pieces.append(data[: exc.start].decode("utf-8"))
            pieces.append("".join(f"%{byte:02X}" for byte in data[exc.start : exc.end]))
            data = data[exc.end :]
            continue
        return "".join(pieces)


def parse_result(result: Any) -> FunctionResponse:
    """Map a handler's return value to a response, or raise :class:`BadFunctionResponse`."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return _inferred(result)
    status = result["statusCode"]
    # 1xx are interim responses, never an answer: sent as one, the client would take the next
    # response on its connection for this request's.
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise _bad(f"statusCode must be an integer from 200 to 599, not {status!r}")
    headers: RawHeaders = []
    raw_headers = result.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise _bad("headers must be an object")
    for name, value in raw_headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise _bad(f"bad header name {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(f"header {name!r} must be a string, not {type(value).__name__}")
        text = str(value)
        if _BAD_HEADER_VALUE.search(text):
            raise _bad(f"header {name!r} has a control character")
        if name.lower() != "content-length":
            headers.append((name.lower().encode("latin-1"), _header_bytes(name, text)))
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise _bad("cookies must be a list of strings")
    for cookie in cookies:
        if _BAD_HEADER_VALUE.search(cookie):
            raise _bad("a cookie has a control character")
        headers.append((b"set-cookie", _header_bytes("set-cookie", cookie)))
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise _bad(f"body must be a string, not {type(body).__name__}")
    elif result.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("isBase64Encoded is true but body is not valid base64") from None
    else:
        data = body.encode("utf-8")
    return FunctionResponse(status, headers, data)


def _inferred(result: Any) -> FunctionResponse:
    if isinstance(result, str):
        data = result.encode("utf-8")
    else:
        try:
            data = json.dumps(result, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            raise _bad(f"a {type(result).__name__} is not a valid response") from None
    return FunctionResponse(200, [(b"content-type", b"application/json")], data)


def _header_bytes(name: str, value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise _bad(f"header {name!r} is not latin-1 text") from None


def _bad(message: str) -> BadFunctionResponse:
    return BadFunctionResponse("the function returned an invalid response", detail=message)
