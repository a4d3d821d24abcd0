"""One OTLP span per request (``--otlp-endpoint``, docs/observability.md, "Traces" → "Spans"):
the span made from a request's :class:`~proxy.accesslog.Finished` record, and the exporter that
sends spans to a collector over OTLP/HTTP, in batches, from a thread of its own.

The span's ids are the request's own (proxy/tracecontext.py decided them before the backend was
called), so no SDK tracer is involved: the span is built whole, after the request has ended, as
an SDK ``ReadableSpan``. The request path only appends the finished record to the bounded queue
of the SDK's batching processor; the processor's thread makes the spans, and the SDK's OTLP
exporter encodes and sends them. When the queue is full (the collector is slow, down or
hanging) a span is dropped and counted, never waited for. This module must not touch the
gateway, the access log or the trace context: it reads the record they produce.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import export as sdk_export
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy.accesslog import MAX_USER_AGENT, Finished

log = logging.getLogger("strangler.spans")

#: Spans held at most, waiting or being sent; past it new spans are dropped.
DEFAULT_MAX_QUEUE = 2048
#: Spans sent in one request to the collector at most.
DEFAULT_BATCH = 512
#: Seconds between sends when fewer than a batch are waiting.
DEFAULT_INTERVAL = 1.0
#: Seconds one send may take (the SDK's retries included); also the bound of :meth:`shutdown`.
DEFAULT_TIMEOUT = 5.0
#: Where OTLP/HTTP receives traces under a collector's base URL.
TRACES_PATH = "/v1/traces"

SERVICE_NAME = "strangler"
#: The methods HTTP's semantic conventions name; any other is reported as ``_OTHER``.
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
)
_UNSET = Status(StatusCode.UNSET)
#: The 256 trace flags by their two hex digits, made once rather than parsed per request.
_FLAGS = {f"{flags:02x}": TraceFlags(flags) for flags in range(256)}
#: What a queued request shows the processor, which reads only whether it is sampled.
_QUEUED = SpanContext(1, 1, False, TraceFlags(TraceFlags.SAMPLED))
_NO_RESOURCE = Resource.get_empty()
_SCALARS = (str, bool, int, float)


def traces_url(endpoint: str) -> str:
    """``URL/v1/traces``, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read, unless the URL already
    names that path. Raises ValueError for anything but an http or https URL with a host."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(
            f"--otlp-endpoint {endpoint!r}: not an OTLP/HTTP URL (http:// or https://, a host, "
            "no query; e.g. http://127.0.0.1:4318)"
        )
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def resource_of(service_version: str) -> Resource:
    """The process as the collector sees it. Made through ``Resource.create`` so that
    ``OTEL_RESOURCE_ATTRIBUTES`` (a pod, an environment) is added; the name and version set
    here win over it."""
    return Resource.create({"service.name": SERVICE_NAME, "service.version": service_version})


def span_of(record: Finished, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """The server span of a finished request: named by its route, with the gateway's span id
    (the parent the backend was told of) and the client's span as its parent."""
    trace = record.trace
    trace_id = int(trace.trace_id, 16)
    context = SpanContext(trace_id, int(trace.span_id, 16), False, _FLAGS[trace.flags])
    parent = None
    if trace.parent_id is not None:
        parent = SpanContext(trace_id, int(trace.parent_id, 16), True, context.trace_flags)
    start = _ns(record.started_at)
    method = record.method
    attributes: dict[str, str | int] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "http.response.status_code": record.status,
        "url.path": record.path,
        "client.address": record.client_ip,
        "strangler.route": record.route,
        "strangler.backend": record.backend,
        "strangler.backend.kind": record.kind,
        "strangler.attempts": record.attempts,
        "strangler.request_id": record.request_id,
    }
    if method not in KNOWN_METHODS:
        attributes["http.request.method_original"] = method
    if record.user_agent is not None:
        attributes["user_agent.original"] = record.user_agent[:MAX_USER_AGENT]
    status = _UNSET
    if record.error is not None:
        attributes["error.type"] = record.error
        status = Status(StatusCode.ERROR, record.error)
    elif record.status >= 500:
        # A server span's 5xx is an error, a 4xx is the client's (HTTP semantic conventions).
        status = Status(StatusCode.ERROR)
    events = [
        Event(name, _event_attributes(attributes_), _ns(at))
        for name, at, attributes_ in record.events
    ]
    return ReadableSpan(
        name=record.route,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        kind=SpanKind.SERVER,
        status=status,
        start_time=start,
        end_time=start + round(record.duration * 1e9),
        instrumentation_scope=scope,
    )


def _ns(unix: float) -> int:
    """Unix seconds as nanoseconds. The whole seconds apart: multiplied as one float, a time
    of today would be rounded to 256 ns."""
    seconds = int(unix)
    return seconds * 1_000_000_000 + round((unix - seconds) * 1e9)


def _event_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """An event's attributes as OTLP can carry them: a value of another type would make the
    encoder fail the whole batch, so it travels as its text."""
    return {k: v if isinstance(v, _SCALARS) else str(v) for k, v in attributes.items()}


class _Queued(ReadableSpan):
    """A finished request as it waits in the processor's queue: the sending thread makes it
    into its span, so that the event loop only appends it."""

    def __init__(self, record: Finished) -> None:
        super().__init__(record.route, _QUEUED, resource=_NO_RESOURCE)
        self.record = record


class _Sender(sdk_export.SpanExporter):
    """What the processor's thread calls with a batch: makes the spans, sends them through the
    real exporter, and counts what became of them. Past :meth:`close_by`'s deadline a batch is
    dropped unsent, so that the flush at shutdown ends."""

    def __init__(
        self, exporter: sdk_export.SpanExporter, resource: Resource, scope: InstrumentationScope
    ) -> None:
        self._exporter = exporter
        self._resource = resource
        self._scope = scope
        # Written by the processor's thread only, read from any.
        self.settled = 0
        self.failed = 0
        self._deadline: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._logged_failure = False

    def close_by(self, deadline: float) -> None:
        self._deadline = deadline

    def export(self, batch: Sequence[ReadableSpan]) -> sdk_export.SpanExportResult:
        result = sdk_export.SpanExportResult.FAILURE
        spans = []
        try:
            if self._deadline is None or time.monotonic() < self._deadline:
                spans = self._spans(batch)
                if spans:
                    result = self._exporter.export(spans)
        except Exception:  # the SDK would log it too; here it is counted as well
            log.exception("sending %d spans failed", len(spans))
        sent = len(spans) if result is sdk_export.SpanExportResult.SUCCESS else 0
        self.failed += len(batch) - sent
        self.settled += len(batch)
        return result

    def _spans(self, batch: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        spans = []
        for queued in batch:
            try:
                spans.append(span_of(cast(_Queued, queued).record, self._resource, self._scope))
            except Exception:  # one odd record costs its span, not the batch
                if not self._logged_failure:  # once: a broken record would repeat per request
                    self._logged_failure = True
                    log.exception("no span could be made of a request")
        return spans

    def shutdown(self) -> None:
        """Stops the exporter's retries and closes its connections; once, from either the
        processor's shutdown or :meth:`SpanExporter.shutdown` giving up on it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._exporter.shutdown()
        except Exception:
            log.exception("closing the span exporter failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SpanExporter:
    """Sends a span per sampled request to an OTLP/HTTP collector at ``endpoint``.

    At most ``max_queue`` spans are held, waiting or in a request being sent; they go out in
    batches of up to ``batch`` every ``interval`` seconds (at once when a batch is full), each
    send given ``timeout`` seconds. ``exporter`` replaces the OTLP/HTTP exporter (tests)."""

    def __init__(
        self,
        endpoint: str,
        service_version: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch: int = DEFAULT_BATCH,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        exporter: sdk_export.SpanExporter | None = None,
    ) -> None:
        if max_queue < 1 or not 1 <= batch <= max_queue:
            raise ValueError(f"span queue {max_queue} and batch {batch}: need 1 <= batch <= queue")
        if interval <= 0 or timeout <= 0:
            raise ValueError(
                f"span interval {interval}s and timeout {timeout}s: both must be above 0"
            )
        self.url = traces_url(endpoint)
        self._max_queue = max_queue
        self._timeout = timeout
        self._sender = _Sender(
            exporter or OTLPSpanExporter(endpoint=self.url, timeout=timeout),
            resource_of(service_version),
            InstrumentationScope(SERVICE_NAME, service_version),
        )
        self._processor = sdk_export.BatchSpanProcessor(
            self._sender,
            max_queue_size=max_queue,
            schedule_delay_millis=interval * 1000,
            max_export_batch_size=batch,
            export_timeout_millis=timeout * 1000,
        )
        # Written on the event loop only: requests handed to the processor, and those refused
        # here (the queue was full, or the exporter is shut down).
        self._accepted = 0
        self._refused = 0
        self._closing = False

    @property
    def dropped(self) -> int:
        """Spans lost: refused because the queue was full (or after shutdown), and those in
        batches that failed to send (refused, timed out, an error answer, or past shutdown's
        deadline)."""
        return self._refused + self._sender.failed

    @property
    def queued(self) -> int:
        """Spans held now: waiting for a batch, or in one being sent."""
        return self._accepted - self._sender.settled

    def export(self, record: Finished) -> None:
        """Queues the request's span when it is sampled; never blocks, never raises. The record
        must not change afterwards: the span is made of it on the sending thread."""
        try:
            if not record.trace.sampled:
                return
            # The SDK's queue would drop its oldest span when full, and log a warning each time;
            # here the newest is refused and counted first. A span being sent still counts, so a
            # hanging collector holds no more than max_queue spans in all.
            if self._closing or self._accepted - self._sender.settled >= self._max_queue:
                self._refused += 1
                return
            self._processor.on_end(_Queued(record))
            self._accepted += 1
        except Exception:  # a malformed record costs its span, never the request
            self._refused += 1

    def shutdown(self) -> None:
        """Sends what is queued, for at most ``timeout`` seconds, and stops the batching thread.

        Blocks for up to ``timeout``: call it once requests have stopped, off the event loop
        (``asyncio.to_thread``). Against a collector that hangs, it returns at the deadline;
        the request in flight then ends at its own timeout, and what is left is counted as
        dropped."""
        if self._closing:
            return
        self._closing = True
        self._sender.close_by(time.monotonic() + self._timeout)
        # The processor's shutdown waits for its thread for 30 s whatever it is told; it runs
        # on a thread of its own so that the wait here is this exporter's timeout.
        closer = threading.Thread(
            target=self._processor.shutdown, name="strangler-spans-shutdown", daemon=True
        )
        closer.start()
        closer.join(self._timeout)
        if closer.is_alive():
            log.warning(
                "the OTLP collector at %s did not take the last spans within %gs",
                self.url,
                self._timeout,
            )
            self._sender.shutdown()
