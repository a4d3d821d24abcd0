"""The gateway's own errors and their JSON bodies (docs/reference.md, "Errors the gateway
answers itself").

Backends translate their failures into these types at their boundary; the gateway renders
them. Nothing else writes an error body.
"""

from __future__ import annotations

import json
from typing import Any


class GatewayError(Exception):
    """An answer the gateway gives itself, before any byte of a response was sent."""

    status = 500
    code = "internal_error"
    #: True when the request provably never reached the backend (a refused connect, a local
    #: limit), so that even a non-idempotent request may be served by a fallback.
    never_sent = False
    #: True for failures that speak of the backend's health (a circuit breaker counts them),
    #: False for the gateway's own refusals and the client's mistakes.
    backend_failure = False

    def __init__(
        self, message: str, detail: str | None = None, *, never_sent: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        #: For logs only; never sent to clients.
        self.detail = detail or message
        if never_sent is not None:
            self.never_sent = never_sent


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class NoRoute(GatewayError):
    status, code = 404, "no_route"


class BodyTooLarge(GatewayError):
    status, code = 413, "body_too_large"


class RequestTimeout(GatewayError):
    status, code = 408, "request_timeout"


class UriTooLong(GatewayError):
    status, code = 414, "uri_too_long"


class HeadersTooLarge(GatewayError):
    status, code = 431, "headers_too_large"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"


class NotImplementedHere(GatewayError):
    """A request the gateway understands but does not carry out (a transfer coding other than
    chunked: RFC 9112 §6.1 asks for 501)."""

    status, code = 501, "not_implemented"


class UpgradeNotSupported(GatewayError):
    """A WebSocket handshake routed to a function backend (docs/forwarding.md, "Upgrades")."""

    status, code = 501, "upgrade_not_supported"


class HttpVersionNotSupported(GatewayError):
    status, code = 505, "http_version_not_supported"


class InternalError(GatewayError):
    status, code = 500, "internal_error"


class UpstreamUnavailable(GatewayError):
    status, code = 502, "upstream_unavailable"
    backend_failure = True


class FunctionError(GatewayError):
    status, code = 502, "function_error"
    backend_failure = True


class BadFunctionResponse(GatewayError):
    status, code = 502, "bad_function_response"
    backend_failure = True


class Overloaded(GatewayError):
    status, code = 503, "overloaded"
    never_sent = True


class CircuitOpen(GatewayError):
    status, code = 503, "circuit_open"
    never_sent = True


class UpstreamTimeout(GatewayError):
    status, code = 504, "upstream_timeout"
    backend_failure = True


class Unauthorized(GatewayError):
    """A route's authorizer needs an identity the request does not carry (docs/authorizers.md)."""

    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    """A function authorizer answered ``isAuthorized: false``."""

    status, code = 403, "forbidden"


class AuthorizerUnavailable(GatewayError):
    """A route's authorizer could not decide (refused, timed out, answered nonsense): never an
    allow."""

    status, code = 503, "authorizer_unavailable"


class UpstreamStatus(GatewayError):
    """A complete backend answer whose status the route lists as a failure (``retries`` or
    ``fallback`` ``statuses``), held back from the client while the gateway may try elsewhere.
    When no other attempt is made, the held answer is what the client gets, unchanged."""

    code = "upstream_status"
    backend_failure = True

    def __init__(self, answer: Any) -> None:
        super().__init__(f"the backend answered {answer.status}")
        self.status = answer.status
        #: The held proxy.backends.base.Answer.
        self.answer = answer


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


def error_body(error: GatewayError, request_id: str) -> bytes:
    return json.dumps(
        {"error": error.code, "message": error.message, "request_id": request_id},
        separators=(",", ":"),
    ).encode()


def error_headers(body: bytes, request_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"cache-control", b"no-store"),
    ]
