"""The access log, trace context and spans through a real `strangler serve`
(docs/observability.md): stdout holds one JSON line per request and nothing else, the fields
are the request's, no query string, cookie or credential appears in any output, the backend
gets a ``traceparent`` that continues the client's trace or starts one, and with an OTLP
endpoint the gateway's span sits between the client's and the backend's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.test_otlp import Collector
from tests.integration.test_upgrades import EchoServer
from tests.support import LOOPBACK, ROOT, Exchange, RawUpstream, response, wait_for

pytestmark = pytest.mark.sockets

SECRETS = ("q=s3cret-query", "session=s3cret-cookie", "Bearer s3cret-token")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Served:
    """`strangler serve` with stdout and stderr read apart."""

    process: subprocess.Popen[bytes]
    gateway: str
    admin: str
    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)

    def lines(self, count: int, timeout: float = 10) -> list[dict[str, object]]:
        """The first ``count`` access-log lines, waiting for them."""
        assert wait_for(lambda: len(self.stdout) >= count, timeout), self.stdout
        return [json.loads(line) for line in self.stdout[:count]]


def _pump(stream: object, into: list[bytes]) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        into.append(line)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(backends: str, routes: str, *flags: str) -> Served:
        config = tmp_path / "routes.yaml"
        config.write_text(f"version: 1\nbackends:\n{backends}routes:\n{routes}")
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "proxy", "serve", "-c", str(config), "--host", LOOPBACK),
                *("--port", "0", "--admin-port", "0", "--shutdown-grace", "0", *flags),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        served = Served(process, "", "")
        started.append(served)
        for stream, into in ((process.stdout, served.stdout), (process.stderr, served.stderr)):
            threading.Thread(target=_pump, args=(stream, into), daemon=True).start()

        def banner() -> bool:
            text = b"".join(served.stderr).decode()
            found = re.search(r"gateway\s+(http://\S+)\n\s+admin\s+(http://\S+)", text)
            if found:
                served.gateway, served.admin = found.groups()
            return found is not None

        assert wait_for(banner, 20), b"".join(served.stderr)
        return served

    yield start
    for served in started:
        served.process.terminate()
        served.process.wait(20)


async def echo_trace(exchange: Exchange) -> None:
    """Answers with the trace headers it got; /fail answers 503."""
    seen = {
        name: exchange.request.header(name)
        for name in ("traceparent", "tracestate", "cookie", "authorization")
    }
    status = "503 Service Unavailable" if exchange.request.target.startswith("/fail") else "200 OK"
    body = json.dumps(seen).encode()
    await exchange.send(response(status, body=body))


def test_one_json_line_per_request_on_stdout_and_nothing_else(serve: object) -> None:
    upstream = RawUpstream(echo_trace).start()
    try:
        served = serve(  # type: ignore[operator]
            f"  legacy: {{url: '{upstream.url}', kind: legacy}}\n"
            "  fn: {function: 'tests.functions:echo'}\n",
            "  - {name: all, match: {path: /}, backend: legacy}\n"
            "  - {name: fn, match: {path: /fn}, backend: fn}\n"
            "  - {name: fails, match: {path: /fail}, backend: legacy,\n"
            "     fallback: {backend: fn, statuses: [503]}}\n",
        )
        gateway = served.gateway
        headers = {
            "Cookie": "session=s3cret-cookie",
            "Authorization": "Bearer s3cret-token",
            "User-Agent": "test-agent/1.0",
            "X-Request-Id": "log-1",
        }
        first = httpx.post(f"{gateway}/a/./b?q=s3cret-query", content=b"12345", headers=headers)
        assert first.status_code == 200
        assert httpx.get(f"{gateway}/fail?q=s3cret-query", headers=headers).status_code == 200
        assert httpx.get(f"{served.gateway}/%2F", headers=headers).status_code == 400
        lines = served.lines(3)
    finally:
        upstream.stop()
    served.process.terminate()
    served.process.wait(20)
    post, fell_back, refused = lines
    assert set(post) == {
        "time", "request_id", "trace_id", "client_ip", "method", "path", "status", "route",
        "backend", "kind", "duration_ms", "upstream_ms", "bytes_in", "bytes_out", "attempts",
        "fallback", "error", "authorizer", "authorizer_result", "authorizer_ms", "user_agent",
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(post["time"]))
    varying = ("time", "trace_id", "duration_ms", "upstream_ms")
    assert {k: v for k, v in post.items() if k not in varying} == {
        "request_id": "log-1",
        "client_ip": "127.0.0.1",
        "method": "POST",
        "path": "/a/b",
        "status": 200,
        "route": "all",
        "backend": "legacy",
        "kind": "legacy",
        "bytes_in": 5,
        "bytes_out": len(first.content),
        "attempts": 1,
        "fallback": None,
        "error": None,
        "authorizer": None,
        "authorizer_result": None,
        "authorizer_ms": None,
        "user_agent": "test-agent/1.0",
    }  # fmt: skip
    assert 0 < float(post["upstream_ms"]) <= float(post["duration_ms"])  # type: ignore[arg-type]
    # The backend's traceparent is in the trace the log names.
    assert str(post["trace_id"]) in json.loads(first.content)["traceparent"][0]
    assert (fell_back["route"], fell_back["backend"], fell_back["kind"]) == ("fails", "fn", "new")
    assert (fell_back["attempts"], fell_back["fallback"], fell_back["path"]) == (2, "fn", "/fail")
    assert (refused["status"], refused["error"], refused["route"]) == (400, "bad_request", "none")
    # stdout is the access log alone; no output of any kind holds a secret.
    out = b"".join(served.stdout).decode()
    err = b"".join(served.stderr).decode()
    assert all(line.startswith("{") for line in out.splitlines())
    assert "gateway  http://" in err  # the banner
    for secret in SECRETS:
        assert secret not in out
        assert secret not in err
    assert "s3cret" not in out + err


def test_access_log_off_writes_nothing_on_stdout(serve: object) -> None:
    upstream = RawUpstream(echo_trace).start()
    try:
        served = serve(  # type: ignore[operator]
            f"  up: {{url: '{upstream.url}'}}\n",
            "  - {name: all, match: {path: /}, backend: up}\n",
            "--access-log",
            "off",
        )
        assert httpx.get(f"{served.gateway}/x").status_code == 200
        time.sleep(0.5)
    finally:
        upstream.stop()
    assert served.stdout == []


def test_a_valid_traceparent_is_forwarded_and_an_invalid_one_replaced(serve: object) -> None:
    upstream = RawUpstream(echo_trace).start()
    try:
        served = serve(  # type: ignore[operator]
            f"  up: {{url: '{upstream.url}'}}\n  fn: {{function: 'tests.functions:echo'}}\n",
            "  - {name: all, match: {path: /}, backend: up}\n"
            "  - {name: fn, match: {path: /fn}, backend: fn}\n",
        )
        gateway = served.gateway
        state = {"tracestate": "vendor=abc"}
        kept = httpx.get(f"{gateway}/x", headers={"traceparent": TRACEPARENT, **state}).json()
        replaced = httpx.get(
            f"{gateway}/x", headers={"traceparent": TRACEPARENT.upper(), **state}
        ).json()
        started = httpx.get(f"{gateway}/x").json()
        event = httpx.get(f"{gateway}/fn", headers={"traceparent": TRACEPARENT}).json()
        lines = served.lines(4)
    finally:
        upstream.stop()
    assert kept["traceparent"] == [TRACEPARENT]
    assert kept["tracestate"] == ["vendor=abc"]
    (new,) = replaced["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", new)
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in new
    assert replaced["tracestate"] == []  # it belonged to the trace not continued
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", started["traceparent"][0])
    # A function sees it in the event's headers.
    assert event["event"]["headers"]["traceparent"] == TRACEPARENT
    assert [line["trace_id"] for line in lines] == [
        "4bf92f3577b34da6a3ce929d0e0e4736",
        new[3:35],
        started["traceparent"][0][3:35],
        "4bf92f3577b34da6a3ce929d0e0e4736",
    ]


def test_a_tunnel_gets_its_line_when_it_closes(serve: object) -> None:
    echo = EchoServer().start()
    try:
        served = serve(  # type: ignore[operator]
            f"  ws: {{url: '{echo.url}'}}\n", "  - {name: live, match: {path: /}, backend: ws}\n"
        )
        port = int(served.gateway.rsplit(":", 1)[1])
        with connect(f"ws://{LOOPBACK}:{port}/chat", compression=None) as client:
            client.send("hello")
            assert client.recv(5) == "echo:hello"
            time.sleep(0.3)
            assert served.stdout == []  # not before it closes
        (line,) = served.lines(1)
    finally:
        echo.stop()
    assert (line["status"], line["route"], line["backend"], line["path"]) == (
        101,
        "live",
        "ws",
        "/chat",
    )
    assert float(line["duration_ms"]) >= 300  # type: ignore[arg-type]
    # The frames each way: "hello" masked (11 bytes) and the close frames; the echo back.
    assert int(line["bytes_in"]) >= 11  # type: ignore[call-overload]
    assert int(line["bytes_out"]) >= 12  # type: ignore[call-overload]


def test_with_an_otlp_endpoint_the_backend_is_a_child_of_the_gateways_span(
    serve: object,
) -> None:
    collector = Collector()
    upstream = RawUpstream(echo_trace).start()
    try:
        served = serve(  # type: ignore[operator]
            f"  up: {{url: '{upstream.url}', kind: legacy}}\n",
            "  - {name: shop, match: {path: /}, backend: up}\n",
            "--otlp-endpoint",
            collector.url,
        )
        seen = httpx.get(
            f"{served.gateway}/items?q=s3cret-query",
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        ).json()
        (line,) = served.lines(1)
        assert wait_for(lambda: len(collector.spans) == 1, 10)
        metrics = httpx.get(f"{served.admin}/metrics").text
    finally:
        upstream.stop()
        collector.stop()
    (forwarded,) = seen["traceparent"]
    version, trace_id, parent_id, flags = forwarded.split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent_id != "00f067aa0ba902b7"  # the gateway's span, not the client's
    assert seen["tracestate"] == ["vendor=abc"]
    (span,) = collector.spans
    assert span.trace_id.hex() == trace_id == line["trace_id"]
    assert span.span_id.hex() == parent_id
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
    assert span.name == "shop"
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["url.path"].string_value == "/items"
    assert attributes["strangler.backend.kind"].string_value == "legacy"
    assert "s3cret" not in str(span)
    assert 'strangler_telemetry_dropped_total{signal="spans"} 0.0' in metrics
    assert 'strangler_telemetry_dropped_total{signal="access_log"} 0.0' in metrics


def test_a_line_names_the_authorizer_its_result_and_the_wait(serve: object) -> None:
    upstream = RawUpstream(echo_trace).start()
    try:
        served = serve(  # type: ignore[operator]
            f"  legacy: {{url: '{upstream.url}', kind: legacy}}\n"
            "authorizers:\n"
            "  tokens: {function: 'tests.functions:authorize', identity: [header:Authorization]}\n",
            "  - {name: secure, match: {path: /}, backend: legacy, authorizer: tokens}\n",
        )
        for token in ("Bearer good", "Bearer s3cret-nobody", None):
            headers = {"Authorization": token} if token else {}
            httpx.get(f"{served.gateway}/account", headers=headers)
        lines = served.lines(3)
    finally:
        upstream.stop()
    fields = ("status", "route", "backend", "error", "authorizer", "authorizer_result")
    assert [tuple(line[f] for f in fields) for line in lines] == [
        (200, "secure", "legacy", None, "tokens", "allow"),
        (403, "secure", "none", "forbidden", "tokens", "deny"),
        (401, "secure", "none", "unauthorized", "tokens", "unauthenticated"),
    ]
    timing = [(float(str(ln["authorizer_ms"])), float(str(ln["duration_ms"]))) for ln in lines]
    assert timing[0][0] > 0
    assert all(wait <= whole for wait, whole in timing)
    output = b"".join(served.stdout + served.stderr).decode()
    assert "s3cret" not in output
