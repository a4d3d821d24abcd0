"""W3C Trace Context (https://www.w3.org/TR/trace-context/, docs/observability.md, "Traces"):
reading a request's ``traceparent``, and the one the backend gets.

A valid ``traceparent`` keeps its trace: without spans of the gateway's own it is forwarded
unchanged, with them (``--otlp-endpoint``) it is forwarded naming the gateway's span as the
parent. A missing or invalid one (any malformed form, an all-zero id, version ``ff``, more than
one header) starts a new trace here, sampled (so that a backend's parent-based tracer records
its part), and the ``tracestate`` that came with it is
dropped, as the specification asks: it belonged to a trace that is not continued.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

#: version 00 exactly; a later version may carry more fields after a "-" (§3.2.4.1).
_V00 = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
_LATER = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?\Z", re.S)
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


class TraceContext(NamedTuple):
    """A request's place in a trace (a tuple: made once per request, cheaply)."""

    #: 32 lower-case hex digits.
    trace_id: str
    #: The client's span (16 hex digits), or None when the trace starts here.
    parent_id: str | None
    #: The span the backend is told is its parent: the gateway's own when it exports spans,
    #: else the client's (the header goes on unchanged), or a new one for a new trace.
    span_id: str
    #: The trace flags, two hex digits (``01``: sampled).
    flags: str
    #: The ``traceparent`` value the backend gets.
    header: bytes

    @property
    def sampled(self) -> bool:
        return int(self.flags, 16) & 1 == 1


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, bytes, bool] | None:
    """(trace id, parent id, flags, whether it is version 00) of a valid ``traceparent``
    value, or None."""
    match = _V00.match(value)
    if match is not None:
        trace_id, parent_id, flags = match.groups()
        current = True
    else:
        later = _LATER.match(value)
        # A later version is read as far as version 00 goes; "ff" is never valid, and a
        # version 00 with more fields is not version 00.
        if later is None or later.group(1) in (b"00", b"ff"):
            return None
        trace_id, parent_id, flags = later.group(2), later.group(3), later.group(4)
        current = False
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags, current


def trace_of(
    traceparent: bytes | None, rng: random.Random, own_span: bool
) -> tuple[TraceContext, bool]:
    """The request's trace context, and whether its ``tracestate`` goes on with it (only
    when its ``traceparent`` was valid). ``traceparent`` is the request's when it has exactly
    one (:func:`proxy.headers.read_head` finds it); ``own_span``: the gateway exports a span
    for the request, which the backend then has as its parent."""
    found = traceparent.strip(b" \t") if traceparent is not None else b""
    parsed = parse_traceparent(found) if found else None
    if parsed is None:
        trace_id = f"{rng.getrandbits(128):032x}"
        span_id = f"{rng.getrandbits(64):016x}"
        header = f"00-{trace_id}-{span_id}-01".encode()
        return TraceContext(trace_id, None, span_id, "01", header), False
    trace, parent, flags, current = parsed
    own = b"%016x" % rng.getrandbits(64) if own_span else parent
    # Passed on as it came when nothing changes; else as version 00, the one understood here.
    header = found if current and not own_span else b"00-%b-%b-%b" % (trace, own, flags)
    context = TraceContext(trace.decode(), parent.decode(), own.decode(), flags.decode(), header)
    return context, True
