"""The ``lambda:`` backend: invoke a function through the Lambda invoke API (docs/functions.md).

The same 2.0 event as for in-process functions is POSTed to
``{base}/2015-03-31/functions/function/invocations``, the path of the Lambda Runtime Interface
Emulator that Lambda container images carry. A reply with ``X-Amz-Function-Error`` is a handler
failure whatever its status. The emulator runs one invocation at a time, hence
``max_concurrency`` 1 by default.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from proxy.backends.base import Answer, ProxyRequest, Slots, read_body, timers
from proxy.backends.errors import UpstreamErrors
from proxy.backends.function import EventBuilder
from proxy.backends.http import head_limits
from proxy.backends.lambda_payload import build_event, parse_result
from proxy.deadline import Deadline
from proxy.errors import (
    BadFunctionResponse,
    FunctionError,
    Overloaded,
    UpgradeNotSupported,
    UpstreamTimeout,
)
from proxy.table import model

log = logging.getLogger("strangler.function")

INVOKE_PATH = "/2015-03-31/functions/function/invocations"


class LambdaBackend:
    def __init__(self, spec: model.Backend, client: httpx.AsyncClient) -> None:
        assert spec.lambda_url is not None
        assert spec.max_concurrency is not None
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._client = client
        self._url = httpx.URL(spec.lambda_url.rstrip("/") + INVOKE_PATH)
        self._extensions = {
            "timeout": {"connect": spec.connect_timeout},
            "head_limits": head_limits(spec),
        }
        self._slots = Slots(spec.max_concurrency)
        self.errors = UpstreamErrors(spec.name)

    async def call(self, request: ProxyRequest) -> Answer:
        response = parse_result(await self.invoke(request, build_event))
        return Answer(response.status, response.headers, response.body)

    async def invoke(self, request: ProxyRequest, build: EventBuilder) -> Any:
        """POST the event ``build`` makes of the request and its whole body, and return the
        function's decoded result (also an authorizer's, proxy/authorizer.py)."""
        # As for in-process functions: the slot first, then the body within the timeout, and
        # one deadline for the body and the invocation together.
        if request.upgrade is not None:
            raise UpgradeNotSupported(f"function {self.name!r} cannot take a WebSocket")
        if not self._slots.take():
            raise Overloaded(f"backend {self.name!r} is at its limit of {self._slots.limit}")
        limit = timers(self.spec, request)[0]
        deadline = Deadline(request.task, limit)
        try:
            body = await read_body(request, deadline, limit)
            payload = json.dumps(build(request, body)).encode()
            reply = await self._invoke(payload)
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            deadline.absorb()
            raise UpstreamTimeout(
                f"function {self.name!r} did not return within {limit:g}s"
            ) from None
        finally:
            deadline.cancel()
            self._slots.give_back()
        if reply.headers.get("x-amz-function-error") or reply.status_code != 200:
            log.error(
                "function %s failed (status %d, %s): %s",
                self.name,
                reply.status_code,
                reply.headers.get("x-amz-function-error", "no X-Amz-Function-Error"),
                reply.text[:2000],
            )
            raise FunctionError(
                f"function {self.name!r} failed",
                detail=f"invoke answered {reply.status_code}: {reply.text[:200]}",
            )
        try:
            return json.loads(reply.content)
        except ValueError:
            raise BadFunctionResponse(
                "the function returned an invalid response", detail="the invoke reply is not JSON"
            ) from None

    async def _invoke(self, payload: bytes) -> httpx.Response:
        upstream = httpx.Request(
            "POST",
            self._url,
            headers=[(b"content-type", b"application/json")],
            content=payload,
            extensions=self._extensions,
        )
        with self.errors:
            return await self._client.send(upstream)

    async def aclose(self) -> None:
        """The shared client belongs to the app; nothing of its own to release."""
