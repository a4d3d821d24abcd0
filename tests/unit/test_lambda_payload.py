"""The HTTP API 2.0 payload both ways (proxy/backends/lambda_payload.py), checked against AWS
Lambda Powertools' independent model of the event, and API Gateway's own rules for bodies,
paths, route keys and request ids (docs/functions.md, "Fidelity with API Gateway"): exact
values by example, and the text-or-base64 choice as a property over any content type."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import urllib.parse
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from hypothesis import given
from hypothesis import strategies as st

from proxy.backends.base import ProxyRequest
from proxy.backends.lambda_payload import (
    REQUEST_ID_BYTES,
    build_authorizer_event,
    build_event,
    is_text_type,
    new_request_id,
    parse_authorizer_result,
    parse_result,
)
from proxy.errors import BadFunctionResponse

NOW = 1_700_000_000.123


def request(**overrides: Any) -> ProxyRequest:
    fields: dict[str, Any] = {
        "method": "POST",
        "path": "/products/caf%C3%A9/reviews",
        "query": b"b=2&a=1&a=%7E&x=y+z&empty=",
        "headers": [
            (b"host", b"shop.example.com:8080"),
            (b"user-agent", b"curl/8.0"),
            (b"x-multi", b"one"),
            (b"cookie", b"session_id=abc; theme=dark"),
            (b"x-multi", b"two"),
            (b"content-type", b"application/json; charset=utf-8"),
            (b"x-forwarded-for", b"10.1.2.3"),
        ],
        "body": None,
        "request_id": "req-1",
        "route": "reviews",
        "route_key": "POST /products/{id}/reviews",
        "captures": {"id": "caf%C3%A9"},
        "client_ip": "10.1.2.3",
        "host": "shop.example.com",
        "protocol": "HTTP/1.1",
        # Building an event never looks at the task that answers the request.
        "task": None,
    }
    fields.update(overrides)
    return ProxyRequest(**fields)


def test_event_has_every_field_of_the_2_0_payload() -> None:
    event = build_event(request(), b'{"stars": 5}', now=NOW, request_id="JhJ4pjxpIAMEJTQ=")
    assert event == {
        "version": "2.0",
        "routeKey": "POST /products/{id}/reviews",
        "rawPath": "/products/café/reviews",
        "rawQueryString": "b=2&a=1&a=%7E&x=y+z&empty=",
        "cookies": ["session_id=abc", "theme=dark"],
        "headers": {
            "host": "shop.example.com:8080",
            "user-agent": "curl/8.0",
            "x-multi": "one,two",
            "content-type": "application/json; charset=utf-8",
            "x-forwarded-for": "10.1.2.3",
        },
        "queryStringParameters": {"b": "2", "a": "1,~", "x": "y z", "empty": ""},
        "pathParameters": {"id": "café"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "strangler",
            "domainName": "shop.example.com",
            "domainPrefix": "shop",
            "http": {
                "method": "POST",
                "path": "/products/café/reviews",
                "protocol": "HTTP/1.1",
                "sourceIp": "10.1.2.3",
                "userAgent": "curl/8.0",
            },
            "requestId": "JhJ4pjxpIAMEJTQ=",
            "routeKey": "POST /products/{id}/reviews",
            "stage": "$default",
            "time": "14/Nov/2023:22:13:20 +0000",
            "timeEpoch": 1_700_000_000_123,
        },
        "body": '{"stars": 5}',
        "isBase64Encoded": False,
    }


def test_powertools_reads_the_event_as_aws_would_send_it() -> None:
    event = build_event(request(), b'{"stars": 5}', now=NOW)
    model = APIGatewayProxyEventV2Model.model_validate(json.loads(json.dumps(event)))
    assert model.requestContext.http.method == "POST"
    assert model.requestContext.http.sourceIp == ipaddress.ip_network("10.1.2.3")
    assert model.requestContext.timeEpoch.timestamp() == pytest.approx(NOW, abs=0.001)
    view = APIGatewayProxyEventV2(event)
    assert view.cookies == ["session_id=abc", "theme=dark"]
    assert view.get_query_string_value("a") == "1,~"
    assert view.headers.get("X-Multi") == "one,two"
    assert view.path_parameters == {"id": "café"}
    assert view.json_body == {"stars": 5}
    assert view.request_context.http.user_agent == "curl/8.0"
    assert view.route_key == "POST /products/{id}/reviews"
    assert view.raw_path == "/products/café/reviews"


def test_optional_fields_are_absent_when_empty() -> None:
    event = build_event(
        request(query=b"", captures={}, headers=[(b"host", b"h")], method="GET"), b"", now=NOW
    )
    for key in ("cookies", "queryStringParameters", "pathParameters", "body"):
        assert key not in event
    assert event["rawQueryString"] == ""
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["userAgent"] == ""
    APIGatewayProxyEventV2Model.model_validate(event)


# ---- request bodies: text or base64 ----------------------------------------------------------


def body_event(content_type: bytes | None, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"h")] + ([(b"content-type", content_type)] if content_type else [])
    return build_event(request(headers=headers), body, now=NOW)


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        (b"text/plain", True),
        (b"text/plain; charset=utf-8", True),
        (b"text/html;charset=UTF-8", True),
        (b"TEXT/CSV", True),
        (b"text/x-custom", True),
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"Application/JSON", True),
        (b" application/json ; charset=utf-8", True),
        (b"application/xml", True),
        (b"application/javascript", True),
        (b"application/vnd.api+json", True),
        (b"application/problem+json", True),
        (b"application/ld+json; profile=x", True),
        (b"application/problem+xml", True),
        (b"application/atom+XML", True),
        (b"image/svg+xml", True),
        # Everything else is base64, as HTTP APIs do.
        (None, False),
        (b"", False),
        (b"application/x-www-form-urlencoded", False),
        (b"application/x-www-form-urlencoded; charset=utf-8", False),
        (b"multipart/form-data; boundary=x", False),
        (b"application/x-javascript", False),
        (b"application/graphql", False),
        (b"application/x-ndjson", False),
        (b"application/jsonl", False),
        (b"application/json-seq", False),
        (b"application/octet-stream", False),
        (b"image/png", False),
        (b"text", False),
        (b"text/", False),
        (b"application/+json", False),
        (b"application/json, text/plain", False),  # sent twice: not one type
    ],
)
def test_a_body_is_text_only_for_textual_types(content_type: bytes | None, text: bool) -> None:
    event = body_event(content_type, b"plain ascii")
    assert event["isBase64Encoded"] is not text
    assert event["body"] == ("plain ascii" if text else "cGxhaW4gYXNjaWk=")
    assert APIGatewayProxyEventV2(event).decoded_body == "plain ascii"


def test_a_form_body_arrives_base64_as_on_aws() -> None:
    event = body_event(b"application/x-www-form-urlencoded", b"user=ann&pw=caf%C3%A9+x")
    assert event["isBase64Encoded"] is True
    assert event["body"] == "dXNlcj1hbm4mcHc9Y2FmJUMzJUE5K3g="
    decoded = base64.b64decode(event["body"]).decode()
    assert urllib.parse.parse_qs(decoded) == {"user": ["ann"], "pw": ["café x"]}


@pytest.mark.parametrize("content_type", [None, b"application/json", b"image/png"])
def test_an_empty_body_is_no_body_key_and_not_base64(content_type: bytes | None) -> None:
    event = body_event(content_type, b"")
    assert "body" not in event
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b'{"a": "\xc3\xa9"}'),
        (b"image/png", b"\x89PNG\r\n"),
        (b"application/json", b"\xff\xfe not utf-8"),  # text type, not UTF-8: base64
    ],
)
def test_bodies_round_trip(content_type: bytes, body: bytes) -> None:
    event = body_event(content_type, body)
    if event["isBase64Encoded"]:
        assert base64.b64decode(event["body"], validate=True) == body
    else:
        assert event["body"].encode("utf-8") == body


_TCHARS = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"


def expected_text(content_type: str) -> bool:
    """The rule of docs/functions.md, "Request bodies", written out independently."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media.partition("/")
    if not (slash and kind and subtype) or not set(kind + subtype) <= set(_TCHARS.lower()):
        return False
    if kind == "text" or media in ("application/json", "application/xml", "application/javascript"):
        return True
    return any(subtype.endswith(s) and len(subtype) > len(s) for s in ("+json", "+xml"))


_tokens = st.one_of(
    st.sampled_from(["text", "application", "image", "json", "xml", "javascript", "vnd.api"]),
    st.text(alphabet=_TCHARS, min_size=1, max_size=12),
)
_subtypes = st.one_of(
    _tokens,
    st.builds(lambda a, b: f"{a}+{b}", _tokens, st.sampled_from(["json", "xml", "JSON", "zip"])),
)
_content_types = st.one_of(
    st.builds(
        lambda kind, sub, params: f"{kind}/{sub}{params}",
        _tokens,
        _subtypes,
        st.sampled_from(["", ";charset=utf-8", "; charset=UTF-8", " ; q=1", ";"]),
    ).map(lambda value: value.upper() if len(value) % 3 == 0 else value),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


_bodies = st.one_of(
    st.text(min_size=1, max_size=32).map(lambda text: text.encode("utf-8")),
    st.binary(min_size=1, max_size=64),
)


@given(content_type=_content_types, body=_bodies)
def test_text_or_base64_follows_the_rule_and_the_body_round_trips(
    content_type: str, body: bytes
) -> None:
    event = body_event(content_type.encode("latin-1") or None, body)
    try:
        body.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    assert is_text_type(content_type) is expected_text(content_type)
    assert event["isBase64Encoded"] is not (expected_text(content_type) and utf8)
    if event["isBase64Encoded"]:
        assert base64.b64decode(event["body"], validate=True) == body
    else:
        assert event["body"].encode("utf-8") == body


# ---- paths: decoded as API Gateway delivers them ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw_path"),
    [
        ("/items/7", "/items/7"),
        ("/items/caf%C3%A9", "/items/café"),
        ("/a%20b/c", "/a b/c"),
        ("/%3F%23%5B%40", "/?#[@"),
        ("/100%25", "/100%"),
        ("/auth;jsessionid=1/login", "/auth;jsessionid=1/login"),
        ("/trailing/", "/trailing/"),
        # Bytes that are not UTF-8 stay escaped rather than become U+FFFD.
        ("/x%FF/y", "/x%FF/y"),
        ("/x%C3/%E2%82%AC%E2", "/x%C3/€%E2"),
    ],
)
def test_raw_path_and_http_path_are_the_decoded_path(path: str, raw_path: str) -> None:
    event = build_event(request(path=path, route_key="ANY /{p+}", captures={}), b"", now=NOW)
    assert event["rawPath"] == raw_path
    assert event["requestContext"]["http"]["path"] == raw_path


# ---- route keys and path parameters -----------------------------------------------------------


@pytest.mark.parametrize(
    ("route_key", "path", "captures", "expected_key", "parameters"),
    [
        # A literal prefix: the bare prefix, or {proxy+} with the rest of the path.
        ("ANY /auth", "/auth", {}, "ANY /auth", None),
        ("ANY /auth", "/auth/", {}, "ANY /auth", None),
        ("ANY /auth", "/auth/login", {}, "ANY /auth/{proxy+}", {"proxy": "login"}),
        ("ANY /auth", "/auth/a/b/", {}, "ANY /auth/{proxy+}", {"proxy": "a/b/"}),
        ("POST /auth", "/auth/login", {}, "POST /auth/{proxy+}", {"proxy": "login"}),
        ("GET /auth/", "/auth", {}, "GET /auth", None),
        (
            "ANY /api/v1/",
            "/api/v1/orders/caf%C3%A9%20x",
            {},
            "ANY /api/v1/{proxy+}",
            {"proxy": "orders/café x"},
        ),
        ("ANY /auth", "/auth;sid=1/login", {}, "ANY /auth/{proxy+}", {"proxy": "login"}),
        # A route on /: $default.
        ("ANY /", "/", {}, "$default", None),
        ("ANY /", "/anything/else", {}, "$default", None),
        ("GET /", "/x", {}, "$default", None),
        # Templates are API Gateway's routes already; their parameters are decoded.
        ("GET /products/{id}", "/products/7", {"id": "7"}, "GET /products/{id}", {"id": "7"}),
        (
            "ANY /files/{path+}",
            "/files/a/b%20c",
            {"path": "a/b%20c"},
            "ANY /files/{path+}",
            {"path": "a/b c"},
        ),
    ],
)
def test_route_key_and_path_parameters_are_api_gateways(
    route_key: str,
    path: str,
    captures: dict[str, str],
    expected_key: str,
    parameters: dict[str, str] | None,
) -> None:
    event = build_event(request(route_key=route_key, path=path, captures=captures), b"", now=NOW)
    assert event["routeKey"] == expected_key
    assert event["requestContext"]["routeKey"] == expected_key
    assert event.get("pathParameters") == parameters
    if parameters is None:
        assert "pathParameters" not in event
    APIGatewayProxyEventV2Model.model_validate(event)


# ---- request ids ------------------------------------------------------------------------------


def test_the_request_id_is_the_gateways_own_and_unique_per_invocation() -> None:
    headers = [(b"host", b"h"), (b"x-request-id", b"chosen-by-the-client")]
    events = [build_event(request(headers=headers), b"", now=NOW) for _ in range(1000)]
    ids = [event["requestContext"]["requestId"] for event in events]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert len(value) == 16
        assert len(base64.b64decode(value, validate=True)) == REQUEST_ID_BYTES
    assert "req-1" not in ids
    assert {event["headers"]["x-request-id"] for event in events} == {"chosen-by-the-client"}


def test_new_request_ids_look_like_api_gateways() -> None:
    value = new_request_id()
    assert len(value) == len("JhJ4pjxpIAMEJTQ=")
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:  # pragma: no cover - the assertion below says what went wrong
        pytest.fail(f"{value!r} is not base64")
    assert build_event(request(), b"", request_id="given")["requestContext"]["requestId"] == "given"


# ---- responses ---------------------------------------------------------------------------------


def test_structured_response_with_cookies_and_headers() -> None:
    response = parse_result(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-Count": 3, "Content-Length": "999"},
            "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
            "body": "caf\u00e9",
        }
    )
    assert response.status == 201
    assert response.headers == [
        (b"content-type", b"text/plain"),
        (b"x-count", b"3"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2; HttpOnly"),
    ]
    assert response.body == "café".encode()


def test_base64_body_is_decoded() -> None:
    data = bytes(range(256))
    response = parse_result(
        {"statusCode": 200, "body": base64.b64encode(data).decode(), "isBase64Encoded": True}
    )
    assert response.body == data


@pytest.mark.parametrize(
    ("result", "body"),
    [
        ("Hello from Lambda!", b"Hello from Lambda!"),
        ({"message": "Hello from Lambda!"}, b'{"message":"Hello from Lambda!"}'),
        ([1, 2], b"[1,2]"),
        (None, b"null"),
        (42, b"42"),
    ],
)
def test_results_without_status_code_are_inferred(result: Any, body: bytes) -> None:
    response = parse_result(result)
    assert response.status == 200
    assert response.headers == [(b"content-type", b"application/json")]
    assert response.body == body


def test_a_missing_body_is_empty() -> None:
    assert parse_result({"statusCode": 204}).body == b""


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"statusCode": "200"}, "statusCode must be an integer from 200 to 599, not '200'"),
        ({"statusCode": 99}, "statusCode must be an integer from 200 to 599, not 99"),
        ({"statusCode": 600}, "statusCode must be an integer from 200 to 599, not 600"),
        ({"statusCode": 100}, "statusCode must be an integer from 200 to 599, not 100"),
        ({"statusCode": 101}, "statusCode must be an integer from 200 to 599, not 101"),
        ({"statusCode": 199}, "statusCode must be an integer from 200 to 599, not 199"),
        ({"statusCode": True}, "statusCode must be an integer from 200 to 599, not True"),
        ({"statusCode": 200, "headers": ["a"]}, "headers must be an object"),
        ({"statusCode": 200, "headers": {"a b": "1"}}, "bad header name 'a b'"),
        ({"statusCode": 200, "headers": {"x": ["1"]}}, "header 'x' must be a string, not list"),
        (
            {"statusCode": 200, "headers": {"x": "a\r\nInjected: 1"}},
            "header 'x' has a control character",
        ),
        ({"statusCode": 200, "headers": {"x": "\u20ac"}}, "header 'x' is not latin-1 text"),
        ({"statusCode": 200, "cookies": "a=1"}, "cookies must be a list of strings"),
        ({"statusCode": 200, "cookies": ["a=1\nb"]}, "a cookie has a control character"),
        ({"statusCode": 200, "body": {"a": 1}}, "body must be a string, not dict"),
        (
            {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
            "isBase64Encoded is true but body is not valid base64",
        ),
        (object(), "a object is not a valid response"),
        (b"bytes", "a bytes is not a valid response"),
        (float("nan"), "a float is not a valid response"),
    ],
)
def test_bad_responses_are_refused_with_a_reason(result: Any, why: str) -> None:
    with pytest.raises(BadFunctionResponse) as caught:
        parse_result(result)
    assert caught.value.code == "bad_function_response"
    assert caught.value.message == "the function returned an invalid response"
    assert caught.value.detail == why


# ---- authorizers (docs/authorizers.md) ---------------------------------------------------------


def test_the_authorizer_event_is_the_one_powertools_models_for_http_api_authorizers() -> None:
    from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
        APIGatewayAuthorizerEventV2,
    )
    from aws_lambda_powertools.utilities.parser.models import ApiGatewayAuthorizerRequestV2

    event = build_authorizer_event(request(), ["abc"], now=NOW)
    model = ApiGatewayAuthorizerRequestV2.model_validate(json.loads(json.dumps(event)))
    assert model.type == "REQUEST"
    assert model.identitySource == ["abc"]
    view = APIGatewayAuthorizerEventV2(event)
    assert view.route_arn == (
        "arn:aws:execute-api:local:000000000000:strangler/$default/POST/products/café/reviews"
    )
    assert view.identity_source == ["abc"]
    assert view.route_key == "POST /products/{id}/reviews"
    assert view.raw_path == "/products/café/reviews"
    assert view.cookies == ["session_id=abc", "theme=dark"]
    assert view.path_parameters == {"id": "café"}
    assert "body" not in event
    assert "isBase64Encoded" not in event


def test_the_backend_event_carries_the_authorizers_context_as_api_gateway_does() -> None:
    context = {"sub": "user-7", "roles": ["a"]}
    event = build_event(request(identity=context), b"", now=NOW)
    assert event["requestContext"]["authorizer"] == {"lambda": context}
    assert "authorizer" not in build_event(request(), b"", now=NOW)["requestContext"]
    assert (
        "authorizer"
        not in build_authorizer_event(request(identity=context), ["x"])["requestContext"]
    )


@pytest.mark.parametrize(
    ("result", "allowed", "context"),
    [
        ({"isAuthorized": True}, True, {}),
        ({"isAuthorized": False, "context": {"a": 1}}, False, {"a": 1}),
        ({"isAuthorized": True, "context": None}, True, {}),
    ],
)
def test_a_simple_response_is_read(result: Any, allowed: bool, context: Any) -> None:
    answer = parse_authorizer_result(result)
    assert (answer.allowed, answer.context) == (allowed, context)


@pytest.mark.parametrize(
    "result",
    [None, "yes", [], {"allowed": True}, {"isAuthorized": "true"}, {"isAuthorized": 1},
     {"isAuthorized": True, "context": []}],
)  # fmt: skip
def test_anything_else_is_a_bad_response(result: Any) -> None:
    with pytest.raises(BadFunctionResponse):
        parse_authorizer_result(result)
