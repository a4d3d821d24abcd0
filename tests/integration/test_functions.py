"""Function backends over real sockets: in-process handlers and a remote invoke endpoint, with
every failure mode answered by its exact code (docs/functions.md; the errors as
docs/reference.md lists them), and the event as API Gateway would build it for the same request
(docs/functions.md, "Fidelity with API Gateway")."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests import functions
from tests.support import RawClient, ThreadedServers, running_gateway, wait_for, write_table

pytestmark = pytest.mark.sockets


def table(tmp_path: Path, backends: dict[str, str], routes: list[tuple[str, str, str]]) -> Path:
    lines = ["version: 1", "backends:"]
    lines += [f"  {name}: {spec}" for name, spec in backends.items()]
    lines.append("routes:")
    lines += [f"  - {{name: {n}, match: {{path: '{p}'}}, backend: {b}}}" for n, p, b in routes]
    path = tmp_path / "routes.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def gateway_with(tmp_path: Path, **handlers: str) -> Iterator[int]:
    """A gateway with one function backend per keyword (name: "handler [yaml extras]"),
    each on route /NAME."""
    backends, routes = {}, []
    for name, spec in handlers.items():
        handler, _, extra = spec.partition(" ")
        backends[name] = f"{{function: 'tests.functions:{handler}'{extra}}}"
        routes.append((name.replace("_", "-"), f"/{name}", name))
    with running_gateway(table(tmp_path, backends, routes)) as (_, servers):
        yield servers.port("gateway")


def get(port: int, target: str, extra: bytes = b"") -> Any:
    client = RawClient(port)
    try:
        return client.request(
            f"GET {target} HTTP/1.1\r\nHost: shop.test\r\nX-Request-Id: rid-1\r\n".encode()
            + extra
            + b"\r\n"
        )
    finally:
        client.close()


def refused(port: int) -> Any:
    """The first 503 for /fn, once the request sent just before has taken the only slot."""
    replies: list[Any] = []

    def refusing() -> bool:
        replies.append(get(port, "/fn"))
        return bool(replies[-1].status == 503)

    assert wait_for(refusing)
    return replies[-1]


def test_event_and_context_reach_the_handler(tmp_path: Path) -> None:
    with gateway_with(tmp_path, echo="echo , timeout: 4s") as port:
        reply = get(port, "/echo/a%20b?x=1&x=2", b"Cookie: s=1; t=2\r\nUser-Agent: ua\r\n")
    assert reply.status == 200
    assert reply.header("content-type") == ["application/json"]
    answer = json.loads(reply.body)
    event = answer["event"]
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["rawPath"] == "/echo/a b"
    assert event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a b"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["headers"]["user-agent"] == "ua"
    assert event["headers"]["x-request-id"] == "rid-1"
    assert is_generated_request_id(event["requestContext"]["requestId"])
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["domainName"] == "shop.test"
    context = answer["context"]
    assert context["function_name"] == "echo"
    assert context["aws_request_id"] == "rid-1"
    assert context["invoked_function_arn"] == "arn:aws:lambda:local:000000000000:function:echo"
    assert 0 < context["remaining_ms"] <= 4000


def is_generated_request_id(value: str) -> bool:
    """An id of the gateway's own, in API Gateway's style (16 base64 characters)."""
    try:
        return len(value) == 16 and len(base64.b64decode(value, validate=True)) == 11
    except binascii.Error:
        return False


def post(port: int, target: str, content_type: bytes | None, body: bytes) -> Any:
    """POST ``body`` to ``target``, with that ``Content-Type`` or (None) without one."""
    head = f"POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n".encode()
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    client = RawClient(port)
    try:
        return client.request(head + b"\r\n" + body)
    finally:
        client.close()


def test_binary_request_body_arrives_base64(tmp_path: Path) -> None:
    payload = bytes(range(256))
    with gateway_with(tmp_path, echo="echo") as port:
        reply = RawClient(port).request(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Type: image/png\r\n"
            b"Content-Length: 256\r\n\r\n" + payload
        )
    event = json.loads(reply.body)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_form_and_untyped_bodies_arrive_base64_and_a_json_api_body_as_text(
    tmp_path: Path,
) -> None:
    form = b"user=ann&note=caf%C3%A9+au+lait&empty="
    with gateway_with(tmp_path, echo="echo") as port:
        form_event = json.loads(
            post(port, "/echo", b"application/x-www-form-urlencoded", form).body
        )["event"]
        json_event = json.loads(
            post(port, "/echo", b"application/vnd.api+json; charset=utf-8", b'{"a":1}').body
        )["event"]
        untyped_event = json.loads(post(port, "/echo", None, b"no type").body)["event"]
    assert form_event["isBase64Encoded"] is True
    fields = urllib.parse.parse_qs(base64.b64decode(form_event["body"]).decode())
    assert fields == {"user": ["ann"], "note": ["café au lait"]}
    assert (json_event["isBase64Encoded"], json_event["body"]) == (False, '{"a":1}')
    assert untyped_event["isBase64Encoded"] is True
    assert base64.b64decode(untyped_event["body"]) == b"no type"


@pytest.mark.parametrize(
    ("target", "raw_path", "proxy"),
    [
        ("/echo/caf%C3%A9", "/echo/café", "café"),
        ("/echo/caf%c3%a9/a%20b", "/echo/café/a b", "café/a b"),
        ("/echo/%7Euser/100%25", "/echo/~user/100%", "~user/100%"),
        ("/echo/%3F%23", "/echo/?#", "?#"),
        ("/echo/x%FF", "/echo/x%FF", "x%FF"),  # not UTF-8: stays escaped
    ],
)
def test_raw_path_is_decoded_as_api_gateway_delivers_it(
    tmp_path: Path, target: str, raw_path: str, proxy: str
) -> None:
    with gateway_with(tmp_path, echo="echo") as port:
        reply = get(port, target + "?q=%20")
    event = json.loads(reply.body)["event"]
    assert event["rawPath"] == raw_path
    assert event["requestContext"]["http"]["path"] == raw_path
    assert event["pathParameters"] == {"proxy": proxy}
    assert event["rawQueryString"] == "q=%20"  # the query is not decoded


def test_route_keys_are_api_gateways_for_prefixes_methods_and_slash(tmp_path: Path) -> None:
    config = write_table(
        tmp_path / "routes.yaml",
        {"fn": "{function: 'tests.functions:echo'}"},
        "\n".join(
            [
                "  - {name: auth, match: {path: /auth}, backend: fn}",
                "  - {name: login, match: {path: /login/, methods: [POST]}, backend: fn}",
                "  - {name: product, match: {path: '/products/{id}'}, backend: fn}",
                "  - {name: rest, match: {path: /}, backend: fn}",
            ]
        ),
    )
    seen: dict[str, dict[str, Any]] = {}
    with running_gateway(config) as (_, servers):
        port = servers.port("gateway")
        for target in ("/auth", "/auth/", "/auth/me/x", "/products/caf%C3%A9", "/", "/a/b"):
            seen[target] = json.loads(get(port, target).body)["event"]
        seen["POST /login/x"] = json.loads(post(port, "/login/x", b"text/plain", b"hi").body)[
            "event"
        ]
    keys = {
        target: (event["routeKey"], event.get("pathParameters", "absent"))
        for target, event in seen.items()
    }
    assert keys == {
        "/auth": ("ANY /auth", "absent"),
        "/auth/": ("ANY /auth", "absent"),
        "/auth/me/x": ("ANY /auth/{proxy+}", {"proxy": "me/x"}),
        "/products/caf%C3%A9": ("ANY /products/{id}", {"id": "café"}),
        "/": ("$default", "absent"),
        "/a/b": ("$default", "absent"),
        "POST /login/x": ("POST /login/{proxy+}", {"proxy": "x"}),
    }
    for event in seen.values():
        assert event["requestContext"]["routeKey"] == event["routeKey"]
        APIGatewayProxyEventV2Model.model_validate(event)


def test_each_invocation_gets_its_own_request_id_whatever_the_client_sends(
    tmp_path: Path,
) -> None:
    with gateway_with(tmp_path, echo="echo") as port:
        answers = [json.loads(get(port, "/echo").body) for _ in range(5)]
    ids = [answer["event"]["requestContext"]["requestId"] for answer in answers]
    assert len(set(ids)) == 5
    assert all(is_generated_request_id(value) for value in ids)
    # The client's X-Request-Id stays where it was: the headers and the gateway's request id.
    assert {answer["event"]["headers"]["x-request-id"] for answer in answers} == {"rid-1"}
    assert {answer["context"]["aws_request_id"] for answer in answers} == {"rid-1"}


@pytest.mark.parametrize(
    ("handler", "status", "headers", "body"),
    [
        (
            "structured",
            201,
            [
                ("content-type", "text/plain"),
                ("x-one", "1"),
                ("x-number", "7"),
                ("set-cookie", "a=1; Path=/"),
                ("set-cookie", "b=2; HttpOnly"),
                ("x-request-id", "rid-1"),
                ("content-length", "7"),
            ],
            b"created",
        ),
        (
            "binary",
            200,
            [
                ("content-type", "application/octet-stream"),
                ("x-request-id", "rid-1"),
                ("content-length", "256"),
            ],
            bytes(range(256)),
        ),
        (
            "plain_string",
            200,
            [
                ("content-type", "application/json"),
                ("x-request-id", "rid-1"),
                ("content-length", "18"),
            ],
            b"Hello from Lambda!",
        ),
        (
            "plain_dict",
            200,
            [
                ("content-type", "application/json"),
                ("x-request-id", "rid-1"),
                ("content-length", "32"),
            ],
            b'{"message":"Hello from Lambda!"}',
        ),
        (
            "async_echo",
            202,
            [("x-async", "yes"), ("x-request-id", "rid-1"), ("content-length", "11")],
            b"/async_echo",
        ),
        ("no_content", 204, [("x-request-id", "rid-1")], b""),
    ],
)
def test_response_shapes_reach_the_client_exactly(
    tmp_path: Path, handler: str, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    with gateway_with(tmp_path, **{handler: handler}) as port:
        client = RawClient(port)
        reply = client.request(
            f"GET /{handler} HTTP/1.1\r\nHost: h\r\nX-Request-Id: rid-1\r\n\r\n".encode()
        )
        assert (reply.status, reply.headers, reply.body) == (status, headers, body)
        # The connection stays usable: the framing was right.
        assert (
            client.request(f"GET /{handler} HTTP/1.1\r\nHost: h\r\n\r\n".encode()).status == status
        )


@pytest.mark.parametrize(
    ("handler", "status", "code", "message"),
    [
        ("raises", 502, "function_error", "function 'raises' failed"),
        ("bad_status", 502, "bad_function_response", "the function returned an invalid response"),
        ("not_json", 502, "bad_function_response", "the function returned an invalid response"),
        (
            "sleeps , timeout: 200ms",
            504,
            "upstream_timeout",
            "function 'fn' did not return within 0.2s",
        ),
        (
            "async_sleeps , timeout: 200ms",
            504,
            "upstream_timeout",
            "function 'fn' did not return within 0.2s",
        ),
    ],
)
def test_failures_answer_their_exact_code(
    tmp_path: Path, handler: str, status: int, code: str, message: str
) -> None:
    with gateway_with(tmp_path, fn=handler) as port:
        reply = get(port, "/fn")
        assert reply.status == status
        assert json.loads(reply.body) == {
            "error": code,
            "message": message.replace("'raises'", "'fn'"),
            "request_id": "rid-1",
        }
        assert reply.header("x-request-id") == ["rid-1"]
        # The gateway and the backend are still up.
        assert get(port, "/fn").status == status


def test_excess_invocations_are_refused_at_once_with_503(tmp_path: Path) -> None:
    functions.release.clear()
    with gateway_with(tmp_path, fn="blocking , max_concurrency: 1") as port:
        first = RawClient(port)
        first.send(b"GET /fn HTTP/1.1\r\nHost: h\r\n\r\n")
        try:
            # While the only slot is taken, the next request is refused, not queued.
            reply = refused(port)
            assert json.loads(reply.body) == {
                "error": "overloaded",
                "message": "backend 'fn' is at its limit of 1",
                "request_id": "rid-1",
            }
        finally:
            functions.release.set()
        assert first.read_response().body == b"released"
        assert get(port, "/fn").body == b"released"


def test_a_blocking_handler_does_not_stall_other_routes(tmp_path: Path) -> None:
    functions.release.clear()
    with gateway_with(tmp_path, slow="blocking", fast="plain_string") as port:
        stuck = RawClient(port)
        stuck.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        try:
            # The blocked handler holds its thread until after this answer: if it held the
            # event loop instead, this request could never be answered and would time out.
            for _ in range(20):
                assert get(port, "/fast").body == b"Hello from Lambda!"
        finally:
            functions.release.set()
        assert stuck.read_response().body == b"released"


def test_a_timed_out_thread_keeps_its_slot_until_it_ends(tmp_path: Path) -> None:
    functions.release.clear()
    with gateway_with(tmp_path, fn="blocking , timeout: 200ms, max_concurrency: 1") as port:
        try:
            assert get(port, "/fn").status == 504
            # The thread is still running: its slot is not free yet.
            assert get(port, "/fn").status == 503
        finally:
            functions.release.set()
        # Once the thread has ended, the slot is free again.
        assert wait_for(lambda: get(port, "/fn").status == 200)


def test_request_bodies_are_bounded(tmp_path: Path) -> None:
    with gateway_with(tmp_path, echo="echo") as port:
        announced = RawClient(port).request(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6291457\r\n\r\n"
        )
        assert announced.status == 413
        assert json.loads(announced.body)["error"] == "body_too_large"
        client = RawClient(port, timeout=30)
        client.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(97):  # 6 MiB + 64 KiB
                client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = client.read_response()
        assert reply.status == 413
        assert json.loads(reply.body)["message"] == "the request body is larger than 6291456 bytes"


# ---- the remote backend ------------------------------------------------------------------------


class Emulator:
    """A stand-in for the Lambda Runtime Interface Emulator: one invocation at a time, handler
    errors reported with X-Amz-Function-Error."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.events: list[dict[str, Any]] = []
        self.busy = 0
        self.overlapped = False
        self.release = threading.Event()
        self.release.set()

    def app(self) -> Starlette:
        async def invoke(request: Request) -> Response:
            self.busy += 1
            self.overlapped = self.overlapped or self.busy > 1
            try:
                event = json.loads(await request.body())
                self.events.append(event)
                await asyncio.to_thread(self.release.wait, 20)
                try:
                    result = self.handler(event, None)
                except Exception as exc:
                    return JSONResponse(
                        {"errorMessage": str(exc), "errorType": type(exc).__name__},
                        headers={"X-Amz-Function-Error": "Unhandled"},
                    )
                return JSONResponse(result)
            finally:
                self.busy -= 1

        return Starlette(
            routes=[Route("/2015-03-31/functions/function/invocations", invoke, methods=["POST"])]
        )


@contextlib.contextmanager
def remote(tmp_path: Path, emulator: Emulator, extra: str = "") -> Iterator[int]:
    servers = ThreadedServers({"rie": emulator.app()}).start()
    try:
        config = table(
            tmp_path,
            {"fn": f"{{lambda: '{servers.url('rie')}', timeout: 3s{extra}}}"},
            [("fn", "/fn", "fn")],
        )
        with running_gateway(config) as (_, gateway):
            yield gateway.port("gateway")
    finally:
        servers.stop()


def test_remote_function_gets_the_same_event_and_its_answer_is_mapped(tmp_path: Path) -> None:
    emulator = Emulator(functions.structured)
    with remote(tmp_path, emulator) as port:
        reply = get(port, "/fn/x?q=1")
    assert reply.status == 201
    assert reply.header("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert reply.body == b"created"
    (event,) = emulator.events
    APIGatewayProxyEventV2Model.model_validate(event)
    assert (event["rawPath"], event["queryStringParameters"]) == ("/fn/x", {"q": "1"})
    assert (event["routeKey"], event["pathParameters"]) == ("ANY /fn/{proxy+}", {"proxy": "x"})
    assert is_generated_request_id(event["requestContext"]["requestId"])


def test_remote_function_error_is_502_function_error(tmp_path: Path) -> None:
    with remote(tmp_path, Emulator(functions.raises)) as port:
        reply = get(port, "/fn")
    assert reply.status == 502
    assert json.loads(reply.body) == {
        "error": "function_error",
        "message": "function 'fn' failed",
        "request_id": "rid-1",
    }


def test_remote_function_runs_one_invocation_at_a_time_by_default(tmp_path: Path) -> None:
    emulator = Emulator(functions.plain_string)
    emulator.release.clear()
    with remote(tmp_path, emulator) as port:
        first = RawClient(port)
        first.send(b"GET /fn HTTP/1.1\r\nHost: h\r\n\r\n")
        try:
            assert json.loads(refused(port).body)["error"] == "overloaded"
        finally:
            emulator.release.set()
        assert first.read_response().body == b"Hello from Lambda!"
    assert not emulator.overlapped


def test_remote_timeout_and_unreachable_emulator(tmp_path: Path) -> None:
    emulator = Emulator(functions.plain_string)
    emulator.release.clear()
    with remote(tmp_path, emulator, ", max_concurrency: 4") as port:
        try:
            reply = get(port, "/fn")
        finally:
            emulator.release.set()
    assert (reply.status, json.loads(reply.body)["error"]) == (504, "upstream_timeout")
    config = table(tmp_path, {"fn": "{lambda: 'http://127.0.0.1:1'}"}, [("fn", "/fn", "fn")])
    with running_gateway(config) as (_, gateway):
        reply = get(gateway.port("gateway"), "/fn")
    assert (reply.status, json.loads(reply.body)["error"]) == (502, "upstream_unavailable")


def test_behind_a_trusted_proxy_the_function_sees_the_real_client(tmp_path: Path) -> None:
    config = table(tmp_path, {"fn": "{function: 'tests.functions:echo'}"}, [("fn", "/fn", "fn")])
    with running_gateway(config, trusted_proxies=("127.0.0.1",)) as (_, servers):
        reply = get(servers.port("gateway"), "/fn", b"X-Forwarded-For: 198.51.100.7\r\n")
    event = json.loads(reply.body)["event"]
    assert event["requestContext"]["http"]["sourceIp"] == "198.51.100.7"
    assert event["headers"]["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
