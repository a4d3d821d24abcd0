"""Spans (proxy/spans.py): the span made of a finished request, exactly; and the exporter's queue,
which takes only sampled requests, never raises, holds at most its bound, counts what it drops
and shuts down in bounded time. In-process: the OTLP exporter is replaced by one in memory (the
real one, against a real receiver, is tests/integration/test_otlp.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter as SdkExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from proxy.accesslog import Finished
from proxy.spans import SpanExporter, _ns, resource_of, span_of, traces_url
from proxy.tracecontext import TraceContext
from tests.support import wait_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
GATEWAY_SPAN = "00f067aa0ba902b7"
STARTED = 1_700_000_000.25
ENDPOINT = "http://127.0.0.1:4318"


def finished(
    *,
    trace_id: str = TRACE_ID,
    parent_id: str | None = CLIENT_SPAN,
    span_id: str = GATEWAY_SPAN,
    flags: str = "01",
    **fields: Any,
) -> Finished:
    """A record as the gateway leaves it: a GET to /products/7 answered by catalog."""
    header = f"00-{trace_id}-{span_id}-{flags}".encode()
    values: dict[str, Any] = {
        "started_at": STARTED,
        "request_id": "req-1",
        "trace": TraceContext(trace_id, parent_id, span_id, flags, header),
        "client_ip": "203.0.113.9",
        "method": "GET",
        "path": "/products/7",
        "route": "product-detail",
        "backend": "catalog",
        "kind": "new",
        "user_agent": "curl/8.5",
        "duration": 0.5,
        "upstream": 0.25,
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 42,
        "attempts": 1,
    }
    values.update(fields)
    return Finished(**values)


RESOURCE = resource_of("1.2.3")
SCOPE = InstrumentationScope("strangler", "1.2.3")


def span(record: Finished) -> ReadableSpan:
    return span_of(record, RESOURCE, SCOPE)


# ---- the span of a request ---------------------------------------------------------------------


def test_a_span_has_the_requests_ids_its_route_as_name_and_the_client_span_as_parent() -> None:
    made = span(finished())
    assert made.name == "product-detail"
    assert made.kind is SpanKind.SERVER
    context = made.context
    assert context is not None
    assert (context.trace_id, context.span_id) == (int(TRACE_ID, 16), int(GATEWAY_SPAN, 16))
    assert context.is_remote is False
    assert context.trace_flags == 1
    parent = made.parent
    assert parent is not None
    assert (parent.trace_id, parent.span_id) == (int(TRACE_ID, 16), int(CLIENT_SPAN, 16))
    assert parent.is_remote is True
    assert made.start_time == 1_700_000_000_250_000_000
    assert made.end_time == 1_700_000_000_750_000_000
    assert made.status.status_code is StatusCode.UNSET
    assert made.instrumentation_scope == SCOPE
    assert made.resource is RESOURCE
    assert dict(made.attributes or {}) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "url.path": "/products/7",
        "client.address": "203.0.113.9",
        "user_agent.original": "curl/8.5",
        "strangler.route": "product-detail",
        "strangler.backend": "catalog",
        "strangler.backend.kind": "new",
        "strangler.attempts": 1,
        "strangler.request_id": "req-1",
    }
    assert made.events == ()


def test_a_trace_started_here_makes_a_root_span() -> None:
    made = span(finished(parent_id=None))
    assert made.parent is None
    assert made.context is not None
    assert made.context.span_id == int(GATEWAY_SPAN, 16)


def test_retries_and_fallbacks_are_events_at_their_own_times() -> None:
    record = finished(
        attempts=3,
        backend="monolith",
        kind="legacy",
        fallback="monolith",
        events=[
            ("retry", STARTED + 0.125, {"reason": "reset", "error": "upstream_unavailable"}),
            (
                "fallback",
                STARTED + 0.375,
                {"from": "catalog", "to": "monolith", "error": "upstream_unavailable"},
            ),
        ],
    )
    made = span(record)
    assert [(e.name, e.timestamp, dict(e.attributes or {})) for e in made.events] == [
        (
            "retry",
            1_700_000_000_375_000_000,
            {"reason": "reset", "error": "upstream_unavailable"},
        ),
        (
            "fallback",
            1_700_000_000_625_000_000,
            {"from": "catalog", "to": "monolith", "error": "upstream_unavailable"},
        ),
    ]
    attributes = made.attributes or {}
    assert (attributes["strangler.attempts"], attributes["strangler.backend"]) == (3, "monolith")
    assert attributes["strangler.backend.kind"] == "legacy"


def test_an_event_value_otlp_cannot_carry_travels_as_text() -> None:
    made = span(finished(events=[("retry", STARTED, {"reason": ("a", 1), "n": 2, "ok": True})]))
    assert dict(made.events[0].attributes or {}) == {"reason": "('a', 1)", "n": 2, "ok": True}


@pytest.mark.parametrize(
    ("status", "error", "code", "description"),
    [
        (200, None, StatusCode.UNSET, None),
        (404, None, StatusCode.UNSET, None),
        (499, None, StatusCode.UNSET, None),
        (503, None, StatusCode.ERROR, None),
        (502, "upstream_unavailable", StatusCode.ERROR, "upstream_unavailable"),
        # A response cut short after its head: the client saw 200, the request failed.
        (200, "aborted", StatusCode.ERROR, "aborted"),
    ],
)
def test_the_status_is_an_error_for_a_gateway_error_or_a_5xx(
    status: int, error: str | None, code: StatusCode, description: str | None
) -> None:
    made = span(finished(status=status, error=error))
    assert made.status.status_code is code
    assert made.status.description == description
    attributes = made.attributes or {}
    assert attributes["http.response.status_code"] == status
    assert attributes.get("error.type") == error


def test_a_method_outside_the_standard_ones_is_other_with_the_original_beside_it() -> None:
    attributes = span(finished(method="PURGE")).attributes or {}
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "PURGE"
    assert "http.request.method_original" not in (span(finished()).attributes or {})


def test_the_user_agent_is_left_out_when_absent_and_cut_when_long() -> None:
    assert "user_agent.original" not in (span(finished(user_agent=None)).attributes or {})
    long = span(finished(user_agent="x" * 5000)).attributes or {}
    assert long["user_agent.original"] == "x" * 512


def test_an_upgraded_connection_is_one_span_as_long_as_its_tunnel() -> None:
    made = span(finished(status=101, duration=3600.0))
    assert made.end_time is not None
    assert made.start_time is not None
    assert made.end_time - made.start_time == 3600 * 10**9
    assert made.status.status_code is StatusCode.UNSET
    assert (made.attributes or {})["http.response.status_code"] == 101


def test_times_keep_their_microseconds() -> None:
    # One float multiplication would round today's times to 256 ns.
    assert _ns(1_700_000_000.25) == 1_700_000_000_250_000_000
    assert abs(_ns(1_700_000_000.123456) - 1_700_000_000_123_456_000) < 1000
    assert _ns(0.000001) == 1000


def test_the_resource_names_the_service_and_keeps_other_resource_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "something-else")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    attributes = resource_of("1.2.3").attributes
    assert attributes["service.name"] == "strangler"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["deployment.environment"] == "prod"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/v1/traces", "https://otlp.example.com/v1/traces"),
        ("http://gateway.example/otlp", "http://gateway.example/otlp/v1/traces"),
    ],
)
def test_spans_go_to_the_traces_path_under_the_endpoint(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:4318", "grpc://collector:4317", "http://", "http://c:4318/?a=1"]
)
def test_an_endpoint_that_is_not_an_http_url_is_refused_by_name(endpoint: str) -> None:
    with pytest.raises(ValueError, match="--otlp-endpoint") as caught:
        traces_url(endpoint)
    assert repr(endpoint) in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_queue": 0}, "batch"),
        ({"max_queue": 10, "batch": 11}, "batch"),
        ({"interval": 0.0}, "interval"),
        ({"timeout": -1.0}, "timeout"),
    ],
)
def test_bad_queue_settings_are_refused_when_built(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpanExporter(ENDPOINT, "1.2.3", exporter=InMemorySpanExporter(), **options)


# ---- the exporter ------------------------------------------------------------------------------


class Gate(SdkExporter):
    """Holds every batch until opened, like a collector that does not answer."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.opened = threading.Event()
        self.result = result
        self.batches: list[Sequence[ReadableSpan]] = []
        self.shut = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(spans)
        self.opened.wait(30)
        return self.result

    def shutdown(self) -> None:
        self.shut.set()

    @property
    def spans(self) -> list[ReadableSpan]:
        return [one for batch in self.batches for one in batch]


def own_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture
def threads() -> Iterator[set[threading.Thread]]:
    """The threads alive before the test; every thread the test starts must end after it."""
    before = set(threading.enumerate())
    yield before
    assert wait_for(lambda: not own_threads(before), timeout=10), own_threads(before)


def test_sampled_requests_arrive_as_their_spans(threads: set[threading.Thread]) -> None:
    memory = InMemorySpanExporter()
    exporter = SpanExporter(ENDPOINT, "1.2.3", exporter=memory, interval=0.01)
    records = [
        finished(span_id=f"{i + 1:016x}", request_id=f"req-{i}", status=200 + i) for i in range(5)
    ]
    for record in records:
        exporter.export(record)
    exporter.shutdown()
    got = sorted(memory.get_finished_spans(), key=lambda s: s.context.span_id if s.context else 0)
    assert [s.context.span_id for s in got if s.context] == [1, 2, 3, 4, 5]
    for made, record in zip(got, records, strict=True):
        expected = span_of(record, RESOURCE, SCOPE)
        assert made.name == expected.name
        assert dict(made.attributes or {}) == dict(expected.attributes or {})
        assert (made.start_time, made.end_time) == (expected.start_time, expected.end_time)
        assert made.resource.attributes["service.version"] == "1.2.3"
    assert (exporter.dropped, exporter.queued) == (0, 0)


def test_unsampled_requests_are_not_exported(threads: set[threading.Thread]) -> None:
    memory = InMemorySpanExporter()
    exporter = SpanExporter(ENDPOINT, "1.2.3", exporter=memory, interval=0.01)
    exporter.export(finished(flags="00", request_id="unsampled"))
    exporter.export(finished(flags="01", request_id="sampled"))
    exporter.shutdown()
    got = [(s.attributes or {})["strangler.request_id"] for s in memory.get_finished_spans()]
    assert got == ["sampled"]
    assert exporter.dropped == 0


def test_export_never_raises_and_counts_what_it_could_not_use(
    threads: set[threading.Thread],
) -> None:
    memory = InMemorySpanExporter()
    exporter = SpanExporter(ENDPOINT, "1.2.3", exporter=memory, interval=0.01)
    broken = finished()
    broken.trace = None  # type: ignore[assignment]
    exporter.export(broken)  # refused on the loop
    exporter.export(finished(flags="zz"))  # refused on the loop
    exporter.export(finished(trace_id="not-hex" * 4, request_id="bad"))  # fails on the thread
    exporter.export(finished(request_id="good"))
    exporter.shutdown()
    got = [(s.attributes or {})["strangler.request_id"] for s in memory.get_finished_spans()]
    assert got == ["good"]
    assert exporter.dropped == 3
    exporter.export(finished())  # after shutdown: refused, counted, not raised
    assert exporter.dropped == 4


def test_a_collector_that_does_not_answer_holds_at_most_the_queue(
    threads: set[threading.Thread],
) -> None:
    gate = Gate()
    exporter = SpanExporter(
        ENDPOINT, "1.2.3", exporter=gate, max_queue=8, batch=4, interval=0.01, timeout=0.5
    )
    most = 0
    for i in range(100):
        exporter.export(finished(request_id=f"req-{i}"))
        most = max(most, exporter.queued)
        if i == 3:  # the first batch is taken, and hangs
            assert wait_for(lambda: len(gate.batches) == 1)
    assert most == 8
    # The batch being sent counts: 4 in it and 4 waiting, the other 92 refused.
    assert (exporter.queued, exporter.dropped) == (8, 92)
    gate.opened.set()
    assert wait_for(lambda: exporter.queued == 0)
    assert len(gate.spans) == 8
    assert exporter.dropped == 92
    exporter.shutdown()


def test_failed_batches_count_as_dropped(threads: set[threading.Thread]) -> None:
    gate = Gate(SpanExportResult.FAILURE)
    gate.opened.set()
    exporter = SpanExporter(ENDPOINT, "1.2.3", exporter=gate, batch=2, interval=0.01)
    for _ in range(5):
        exporter.export(finished())
    exporter.shutdown()
    assert len(gate.spans) == 5
    assert (exporter.dropped, exporter.queued) == (5, 0)


def test_shutdown_is_bounded_when_a_send_hangs(threads: set[threading.Thread]) -> None:
    gate = Gate()
    exporter = SpanExporter(
        ENDPOINT, "1.2.3", exporter=gate, max_queue=16, batch=4, interval=0.01, timeout=0.3
    )
    for _ in range(4):
        exporter.export(finished())
    assert wait_for(lambda: len(gate.batches) == 1)
    for _ in range(6):
        exporter.export(finished())
    started = time.monotonic()
    exporter.shutdown()
    took = time.monotonic() - started
    assert 0.3 <= took < 0.6
    # Given up on: the exporter was closed, which ends a real exporter's retries.
    assert gate.shut.is_set()
    gate.opened.set()  # the send in flight ends (a real one at its timeout)
    # What was waiting is dropped unsent, past the deadline; the last send came back OK.
    assert wait_for(lambda: exporter.queued == 0)
    assert len(gate.batches) == 1
    assert exporter.dropped == 6


def test_shutdown_sends_what_is_queued_first(threads: set[threading.Thread]) -> None:
    memory = InMemorySpanExporter()
    exporter = SpanExporter(ENDPOINT, "1.2.3", exporter=memory, interval=60.0)
    for _ in range(3):
        exporter.export(finished())
    assert memory.get_finished_spans() == ()  # not yet: the interval is a minute
    started = time.monotonic()
    exporter.shutdown()
    assert time.monotonic() - started < 1
    assert len(memory.get_finished_spans()) == 3
    exporter.shutdown()  # twice is harmless
