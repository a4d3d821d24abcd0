"""The ``function:`` backend: call a Lambda-style handler in this process (docs/functions.md).

The handler is imported when the table is loaded. A plain ``def`` runs in a thread of the
backend's own pool, so a blocking handler never stalls the event loop or other backends; an
``async def`` runs on the loop. ``max_concurrency`` bounds invocations in flight, and a
request past it is refused at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from proxy.backends.base import Answer, ProxyRequest, Slots, read_body, timers
from proxy.backends.lambda_payload import build_event, parse_result
from proxy.deadline import Deadline
from proxy.errors import (
    FunctionError,
    GatewayError,
    Overloaded,
    UpgradeNotSupported,
    UpstreamTimeout,
)
from proxy.table import model

log = logging.getLogger("strangler.function")

#: Makes the event a handler gets from the request and its whole body.
EventBuilder = Callable[[ProxyRequest, bytes], dict[str, Any]]

#: What ``context.memory_limit_in_mb`` reports; nothing enforces it in process.
MEMORY_LIMIT_MB = 128
#: Lambda's longest invocation: what the context reports when nothing bounds this one.
LAMBDA_MAX_TIMEOUT = 900.0


def load_handler(reference: str) -> Callable[..., Any]:
    """Import ``module.path:attr``; ValueError says why it cannot be used."""
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config error
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


class LambdaContext:
    """The context object of the Lambda Python runtime, as far as a handler can use it here."""

    def __init__(self, function_name: str, request_id: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = MEMORY_LIMIT_MB
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "strangler"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionBackend:
    def __init__(self, spec: model.Backend) -> None:
        assert spec.function is not None
        assert spec.max_concurrency is not None
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._handler = load_handler(spec.function)
        call = getattr(self._handler, "__call__", None)  # noqa: B004 - async callable objects
        self._is_async = inspect.iscoroutinefunction(self._handler) or (
            call is not None and inspect.iscoroutinefunction(call)
        )
        self._slots = Slots(spec.max_concurrency)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def call(self, request: ProxyRequest) -> Answer:
        response = parse_result(await self.invoke(request, build_event))
        return Answer(response.status, response.headers, response.body)

    async def invoke(self, request: ProxyRequest, build: EventBuilder) -> Any:
        """Run the handler on the event ``build`` makes of the request and its whole body, and
        return what it returned (also an authorizer's, proxy/authorizer.py)."""
        # The slot is taken before the body is read, and the body must arrive within the
        # backend's timeout: uploads held back by slow clients are bounded by max_concurrency
        # and never outlive the deadline. The handler gets what remains of it.
        if request.upgrade is not None:
            raise UpgradeNotSupported(f"function {self.name!r} cannot take a WebSocket")
        if not self._slots.take():
            raise Overloaded(f"backend {self.name!r} is at its limit of {self._slots.limit}")
        loop = request.task.get_loop()
        # With `timeout: 0`, the idle timeout bounds the invocation (a function's answer is
        # its head and body at once); with neither, the context tells Lambda's own maximum.
        limit = timers(self.spec, request)[0]
        deadline = Deadline(request.task, limit)
        ends = loop.time() + (limit or LAMBDA_MAX_TIMEOUT)
        in_thread = False
        try:
            body = await read_body(request, deadline, limit)
            event = build(request, body)
            context = LambdaContext(self.name, request.request_id, max(0.0, ends - loop.time()))
            if self._is_async:
                return await self._handler(event, context)
            in_thread = True
            return await self._in_thread(event, context, loop)
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            deadline.absorb()
            raise self._timed_out(limit) from None
        except GatewayError:
            raise
        except Exception as exc:
            raise self._raised(exc) from exc
        finally:
            deadline.cancel()
            if not in_thread:
                self._slots.give_back()

    def _in_thread(
        self, event: dict[str, Any], context: LambdaContext, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._slots.limit, thread_name_prefix=f"function-{self.name}"
            )
        future = self._pool.submit(self._handler, event, context)
        # A thread cannot be stopped: its slot is given back when it really ends, not when the
        # client stops waiting, so a stuck handler keeps counting against max_concurrency.
        future.add_done_callback(lambda _: self._give_back_from_thread(loop))
        return asyncio.wrap_future(future)

    def _give_back_from_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # A handler may outlive the loop (the server stopped while it ran): nothing to give.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._slots.give_back)

    def _timed_out(self, limit: float) -> UpstreamTimeout:
        return UpstreamTimeout(f"function {self.name!r} did not return within {limit:g}s")

    def _raised(self, exc: Exception) -> FunctionError:
        log.error("function %s raised", self.name, exc_info=exc)
        return FunctionError(
            f"function {self.name!r} failed", detail=f"{type(exc).__name__}: {exc}"
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
