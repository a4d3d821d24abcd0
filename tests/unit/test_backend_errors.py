"""The one translation of httpx failures (proxy/backends/errors.py): every transport error
class to its gateway error, ``never_sent`` only where the connection was never made, foreign
exceptions untouched; and the regression that a ``lambda:`` backend's refused connect is
UpstreamUnavailable with never_sent=True, so ``retry_on: [connect_failure]`` retries it."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.attempt import attempt
from proxy.backends.base import ProxyRequest
from proxy.backends.errors import UpstreamErrors
from proxy.backends.remote import INVOKE_PATH, LambdaBackend
from proxy.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from proxy.live import publish
from proxy.metrics import Metrics
from proxy.routes import compile_table
from proxy.table.loader import parse_table
from proxy.table.model import Backend as BackendSpec

pytestmark = pytest.mark.anyio

UNAVAILABLE = (UpstreamUnavailable, 502, "upstream_unavailable", "backend 'b' is unavailable")
TIMEOUT = (UpstreamTimeout, 504, "upstream_timeout", "backend 'b' did not answer in time")

#: Every concrete httpx transport error: what it becomes, and whether it was never sent.
MAPPED: dict[type[httpx.TransportError], tuple[tuple[object, ...], bool]] = {
    httpx.ConnectError: (UNAVAILABLE, True),
    httpx.ConnectTimeout: (UNAVAILABLE, True),
    httpx.ReadTimeout: (TIMEOUT, False),
    httpx.WriteTimeout: (TIMEOUT, False),
    httpx.PoolTimeout: (TIMEOUT, False),
    httpx.ReadError: (UNAVAILABLE, False),
    httpx.WriteError: (UNAVAILABLE, False),
    httpx.CloseError: (UNAVAILABLE, False),
    httpx.RemoteProtocolError: (UNAVAILABLE, False),
    httpx.LocalProtocolError: (UNAVAILABLE, False),
    httpx.ProxyError: (UNAVAILABLE, False),
    httpx.UnsupportedProtocol: (UNAVAILABLE, False),
    # The abstract bases, should anything raise them as they are.
    httpx.TransportError: (UNAVAILABLE, False),
    httpx.NetworkError: (UNAVAILABLE, False),
    httpx.ProtocolError: (UNAVAILABLE, False),
    httpx.TimeoutException: (TIMEOUT, False),
}


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    sub: type
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_the_table_covers_every_httpx_transport_error() -> None:
    httpx_errors = {c for c in _all_subclasses(httpx.TransportError) if c.__module__ == "httpx"}
    httpx_errors.add(httpx.TransportError)
    assert httpx_errors == set(MAPPED)


@pytest.mark.parametrize("kind", list(MAPPED), ids=lambda kind: kind.__name__)
def test_each_httpx_error_maps_to_its_gateway_error(kind: type[httpx.TransportError]) -> None:
    (error_type, status, code, message), never_sent = MAPPED[kind]
    original = kind("the detail")
    with pytest.raises(GatewayError) as caught, UpstreamErrors("b"):
        raise original
    error = caught.value
    assert type(error) is error_type
    assert (error.status, error.code, error.message) == (status, code, message)
    assert error.never_sent is never_sent
    assert error.backend_failure is True
    assert error.detail == f"{kind.__name__}: the detail"
    assert error.__cause__ is original


@pytest.mark.parametrize(
    "foreign",
    [
        ValueError("not ours"),
        httpx.DecodingError("a request error that is not a transport error"),
        httpx.TooManyRedirects("neither"),
        httpx.InvalidURL("nor this"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_foreign_exceptions_pass_through(foreign: BaseException) -> None:
    with pytest.raises(type(foreign)) as caught, UpstreamErrors("b"):
        raise foreign
    assert caught.value is foreign


def test_no_exception_is_nothing() -> None:
    errors = UpstreamErrors("b")
    with errors:
        value = 1
    assert value == 1
    # One object serves every request.
    with pytest.raises(UpstreamTimeout), errors:
        raise httpx.ReadTimeout("slow")
    with errors:
        pass


# -- the lambda backend -----------------------------------------------------------------

TABLE = """\
version: 1
backends:
  fn: {lambda: "http://fn.internal:9000"}
routes:
  - name: fn
    match: {path: /fn}
    backend: fn
    retries: {attempts: 1, retry_on: [connect_failure]}
"""


def lambda_spec() -> BackendSpec:
    return parse_table(TABLE.encode(), "t.yaml").backends["fn"]


def request_for(method: str = "POST") -> ProxyRequest:
    task = asyncio.current_task()
    assert task is not None
    return ProxyRequest(
        method=method,
        path="/fn",
        query=b"",
        headers=[(b"host", b"shop.test")],
        body=None,
        request_id="rid",
        route="fn",
        route_key="ANY /fn",
        captures={},
        client_ip="10.0.0.1",
        host="shop.test",
        protocol="HTTP/1.1",
        task=task,
    )


async def test_a_lambda_backends_refused_connect_was_never_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        backend = LambdaBackend(lambda_spec(), client)
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.call(request_for())
    error = caught.value
    assert error.never_sent is True
    assert error.message == "backend 'fn' is unavailable"
    assert error.detail == "ConnectError: connection refused"
    assert isinstance(error.__cause__, httpx.ConnectError)


async def test_a_lambda_backends_read_timeout_is_504_and_may_have_been_sent() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        backend = LambdaBackend(lambda_spec(), client)
        with pytest.raises(UpstreamTimeout) as caught:
            await backend.call(request_for())
    assert caught.value.never_sent is False


async def test_a_refused_lambda_connect_is_retried_for_a_post() -> None:
    calls: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"statusCode": 201, "body": "made"})

    metrics = Metrics("t")
    async with httpx.AsyncClient(transport=httpx.MockTransport(flaky)) as client:

        def make(spec: BackendSpec) -> LambdaBackend:
            return LambdaBackend(spec, client)

        live = publish(compile_table(parse_table(TABLE.encode(), "t.yaml"), make), metrics)
        (route,) = live.table.router.routes
        done = await attempt(
            route,
            live.state(route),
            live.table.backends["fn"],
            request_for("POST"),
            None,
            random.Random(0),
        )
    assert (done.answer.status, done.answer.body) == (201, b"made")
    assert len(calls) == 2
    assert [str(c.url) for c in calls] == [f"http://fn.internal:9000{INVOKE_PATH}"] * 2
    assert json.loads(calls[1].content)["requestContext"]["http"]["method"] == "POST"
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name in ("strangler_retries_total", "strangler_upstream_errors_total"):
                found[sample.name] = (sample.labels, sample.value)
    assert found == {
        "strangler_retries_total": (
            {"route": "fn", "backend": "fn", "reason": "connect_failure"},
            1.0,
        ),
        "strangler_upstream_errors_total": (
            {"route": "fn", "backend": "fn", "reason": "unavailable"},
            1.0,
        ),
    }
