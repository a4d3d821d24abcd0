"""Spans over OTLP/HTTP (proxy/spans.py) against a real receiver on loopback: what arrives,
decoded with OpenTelemetry's protobuf definitions, is exactly what the records said; spans go in
batches; and a collector that is down, hangs, or comes back never costs a request more than the
queue's append, never holds more than the queue, and never holds up shutdown past its timeout.

The gateway's wiring (``strangler serve --otlp-endpoint``) is tested end to end elsewhere; here
the exporter is driven with records directly."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from proxy.accesslog import Finished
from proxy.spans import SpanExporter
from tests.support import free_port, wait_for
from tests.unit.test_spans import STARTED, TRACE_ID, finished

pytestmark = pytest.mark.sockets

VERSION = "1.2.3"
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200


# ---- receivers -----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    content_type: str
    request: ExportTraceServiceRequest

    @property
    def spans(self) -> list[Span]:
        return [
            span
            for resource in self.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class Collector:
    """An OTLP/HTTP receiver: takes POST /v1/traces (protobuf), decodes it, answers 200 with an
    empty ExportTraceServiceResponse."""

    def __init__(self, port: int = 0) -> None:
        received: list[Received] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(Received(self.path, self.headers["Content-Type"], request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def spans(self) -> list[Span]:
        return [span for received in list(self.received) for span in received.spans]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass
class Hanging:
    """Accepts connections and reads what comes, and never answers."""

    listener: socket.socket = field(default_factory=socket.socket)
    connections: list[socket.socket] = field(default_factory=list)
    bytes_read: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.listener.accept()
                connection.settimeout(0.01)
                self.connections.append(connection)
            for connection in self.connections:
                with contextlib.suppress(TimeoutError, OSError):
                    self.bytes_read += len(connection.recv(65536))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()
        self.listener.close()


class Refusing:
    """Answers every export with 400 (not retried by the SDK: the batch is lost)."""

    def __init__(self) -> None:
        owner = self
        self.posts = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.posts += 1
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def collector() -> Iterator[Collector]:
    started = Collector()
    yield started
    started.stop()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    started = Hanging()
    yield started
    started.stop()


@pytest.fixture
def threads() -> Iterator[None]:
    """Every thread an exporter starts (its batching thread, its shutdown) ends after the test."""
    before = set(threading.enumerate())
    yield

    def left() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t not in before and t.is_alive() and t.name.startswith(("Otel", "strangler"))
        ]

    assert wait_for(lambda: not left(), timeout=10), left()


# ---- decoding ------------------------------------------------------------------------------------


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def request_ids(spans: list[Span]) -> list[str]:
    return [attributes(span.attributes)["strangler.request_id"] for span in spans]


def records(count: int, **fields: Any) -> list[Finished]:
    return [
        finished(span_id=f"{i + 1:016x}", request_id=f"req-{i}", **fields) for i in range(count)
    ]


def export_all(exporter: SpanExporter, batch: list[Finished]) -> tuple[float, int]:
    """Exports every record; the cost of one call in µs, and the most spans held meanwhile."""
    most = 0
    took = 0.0
    for record in batch:
        started = time.perf_counter()
        exporter.export(record)
        took += time.perf_counter() - started
        most = max(most, exporter.queued)
    return took / len(batch) * 1e6, most


# ---- a collector that answers --------------------------------------------------------------------


def test_every_record_arrives_as_its_span(collector: Collector, threads: None) -> None:
    root = finished(parent_id=None, span_id="00000000000000aa", request_id="root")
    failed = finished(
        span_id="00000000000000bb",
        request_id="failed",
        method="PURGE",
        status=502,
        error="upstream_unavailable",
        attempts=3,
        backend="monolith",
        kind="legacy",
        fallback="monolith",
        user_agent=None,
        events=[
            ("retry", STARTED + 0.125, {"reason": "reset", "error": "upstream_unavailable"}),
            ("fallback", STARTED + 0.25, {"from": "catalog", "to": "monolith", "error": "x"}),
        ],
    )
    batch = [root, failed, *records(98)]
    exporter = SpanExporter(collector.url, VERSION, interval=0.05)
    cost, _ = export_all(exporter, batch)
    exporter.shutdown()
    print(f"export(): {cost:.2f} µs per call, collector up")

    assert {(r.path, r.content_type) for r in collector.received} == {
        ("/v1/traces", "application/x-protobuf")
    }
    spans = {span.span_id.hex(): span for span in collector.spans}
    assert len(collector.spans) == len(batch) == len(spans)
    assert exporter.dropped == 0
    request = collector.received[0].request
    assert attributes(request.resource_spans[0].resource.attributes)["service.name"] == "strangler"
    assert attributes(request.resource_spans[0].resource.attributes)["service.version"] == VERSION
    scope = request.resource_spans[0].scope_spans[0].scope
    assert (scope.name, scope.version) == ("strangler", VERSION)

    got = spans["00000000000000aa"]
    assert got.trace_id.hex() == TRACE_ID
    assert got.parent_span_id == b""
    assert got.flags == HAS_IS_REMOTE
    assert got.name == "product-detail"
    assert got.kind == Span.SPAN_KIND_SERVER
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (
        1_700_000_000_250_000_000,
        1_700_000_000_750_000_000,
    )
    assert got.status.code == Status.STATUS_CODE_UNSET
    assert list(got.events) == []
    assert attributes(got.attributes) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "url.path": "/products/7",
        "client.address": "203.0.113.9",
        "user_agent.original": "curl/8.5",
        "strangler.route": "product-detail",
        "strangler.backend": "catalog",
        "strangler.backend.kind": "new",
        "strangler.attempts": 1,
        "strangler.request_id": "root",
    }

    got = spans["00000000000000bb"]
    assert got.trace_id.hex() == TRACE_ID
    assert got.parent_span_id.hex() == "b7ad6b7169203331"
    assert got.flags == HAS_IS_REMOTE | IS_REMOTE
    assert (got.status.code, got.status.message) == (
        Status.STATUS_CODE_ERROR,
        "upstream_unavailable",
    )
    assert attributes(got.attributes) == {
        "http.request.method": "_OTHER",
        "http.request.method_original": "PURGE",
        "http.response.status_code": 502,
        "url.path": "/products/7",
        "client.address": "203.0.113.9",
        "strangler.route": "product-detail",
        "strangler.backend": "monolith",
        "strangler.backend.kind": "legacy",
        "strangler.attempts": 3,
        "strangler.request_id": "failed",
        "error.type": "upstream_unavailable",
    }
    assert [(e.name, e.time_unix_nano, attributes(e.attributes)) for e in got.events] == [
        (
            "retry",
            1_700_000_000_375_000_000,
            {"reason": "reset", "error": "upstream_unavailable"},
        ),
        (
            "fallback",
            1_700_000_000_500_000_000,
            {"from": "catalog", "to": "monolith", "error": "x"},
        ),
    ]
    assert sorted(request_ids(collector.spans)) == sorted(r.request_id for r in batch)


def test_spans_go_in_batches(collector: Collector, threads: None) -> None:
    # The interval is a minute: a full batch is sent when it is full, the rest at shutdown.
    exporter = SpanExporter(collector.url, VERSION, batch=10, interval=60.0)
    export_all(exporter, records(35))
    exporter.shutdown()
    assert [len(r.spans) for r in collector.received] == [10, 10, 10, 5]
    assert sorted(request_ids(collector.spans)) == sorted(f"req-{i}" for i in range(35))
    assert exporter.dropped == 0


def test_unsampled_requests_send_nothing(collector: Collector, threads: None) -> None:
    exporter = SpanExporter(collector.url, VERSION, interval=0.05)
    export_all(exporter, records(5, flags="00"))
    exporter.shutdown()
    assert collector.received == []
    assert exporter.dropped == 0


# ---- a collector that is down, hangs, or comes back ------------------------------------------


def test_a_collector_that_is_down_costs_nothing_but_the_spans(threads: None) -> None:
    exporter = SpanExporter(
        f"http://127.0.0.1:{free_port()}",
        VERSION,
        max_queue=64,
        batch=16,
        interval=0.05,
        timeout=0.5,
    )
    batch = records(5000)
    cost, most = export_all(exporter, batch)
    print(f"export(): {cost:.2f} µs per call, collector refusing connections")
    assert most <= 64
    started = time.monotonic()
    exporter.shutdown()
    assert time.monotonic() - started < 0.5 + 0.3
    # Everything was lost, and counted: refused at the queue, or in a batch that failed.
    assert wait_for(lambda: exporter.dropped == 5000)
    assert exporter.queued == 0


def test_a_collector_that_hangs_holds_no_more_than_the_queue(
    hanging: Hanging, threads: None
) -> None:
    exporter = SpanExporter(
        hanging.url, VERSION, max_queue=64, batch=16, interval=0.05, timeout=0.5
    )
    batch = records(20_000)
    export_all(exporter, batch[:16])  # a full batch: sent at once, and never answered
    assert wait_for(lambda: hanging.bytes_read > 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cost, most = export_all(exporter, batch[16:])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"export(): {cost:.2f} µs per call (traced), collector hanging; held {grown} bytes more")
    assert most <= 64
    # 20,000 spans kept would be megabytes; what is held is the queue's worth.
    assert grown < 256 * 1024
    started = time.monotonic()
    exporter.shutdown()
    assert time.monotonic() - started < 0.5 + 0.3
    assert hanging.bytes_read > 0
    # The request in flight times out after shutdown returned; then nothing is left.
    assert wait_for(lambda: exporter.dropped == 20_000)
    assert exporter.queued == 0


def test_spans_arrive_again_when_the_collector_comes_back(threads: None) -> None:
    port = free_port()
    exporter = SpanExporter(
        f"http://127.0.0.1:{port}", VERSION, max_queue=64, batch=16, interval=0.05, timeout=0.5
    )
    export_all(exporter, records(10))
    assert wait_for(lambda: exporter.dropped == 10)
    back = Collector(port)
    try:
        later = [finished(request_id=f"later-{i}") for i in range(10)]
        export_all(exporter, later)
        assert wait_for(lambda: len(back.spans) == 10)
        exporter.shutdown()
        assert sorted(request_ids(back.spans)) == sorted(r.request_id for r in later)
        assert exporter.dropped == 10
    finally:
        back.stop()


def test_a_collector_that_answers_an_error_loses_the_batch_and_counts_it(threads: None) -> None:
    refusing = Refusing()
    try:
        exporter = SpanExporter(refusing.url, VERSION, batch=4, interval=0.05, timeout=0.5)
        export_all(exporter, records(8))
        exporter.shutdown()
        assert wait_for(lambda: exporter.dropped == 8)
        assert refusing.posts >= 2
    finally:
        refusing.stop()
