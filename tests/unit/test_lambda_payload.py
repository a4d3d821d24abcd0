"""The HTTP API 2.0 payload both ways, checked against AWS Lambda Powertools' independent model
of the event."""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

from proxy.backends.base import ProxyRequest
from proxy.backends.lambda_payload import build_event, parse_result
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
    event = build_event(request(), b'{"stars": 5}', now=NOW)
    assert event == {
        "version": "2.0",
        "routeKey": "POST /products/{id}/reviews",
        "rawPath": "/products/caf%C3%A9/reviews",
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
                "path": "/products/caf%C3%A9/reviews",
                "protocol": "HTTP/1.1",
                "sourceIp": "10.1.2.3",
                "userAgent": "curl/8.0",
            },
            "requestId": "req-1",
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
    assert view.raw_path == "/products/caf%C3%A9/reviews"


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


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (b"application/json", b'{"a": "\xc3\xa9"}', True),
        (b"text/plain; charset=utf-8", b"hello", True),
        (b"application/x-www-form-urlencoded", b"a=1&b=2", True),
        (b"application/problem+json", b"{}", True),
        (b"image/png", b"\x89PNG\r\n", False),
        (b"application/octet-stream", b"plain ascii", False),
        (b"application/json", b"\xff\xfe not utf-8", False),
        (None, b"no type", False),
    ],
)
def test_bodies_travel_as_text_or_base64(
    content_type: bytes | None, body: bytes, text: bool
) -> None:
    headers = [(b"host", b"h")] + ([(b"content-type", content_type)] if content_type else [])
    event = build_event(request(headers=headers), body, now=NOW)
    assert event["isBase64Encoded"] is not text
    if text:
        assert event["body"] == body.decode("utf-8")
        assert APIGatewayProxyEventV2(event).decoded_body == body.decode("utf-8")
    else:
        assert base64.b64decode(event["body"], validate=True) == body


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
