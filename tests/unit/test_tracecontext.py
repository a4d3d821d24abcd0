"""W3C trace context (proxy/tracecontext.py): every valid ``traceparent`` keeps its trace,
every malformed one starts a new trace and loses its ``tracestate`` (property tests), and the
header the backend gets names the gateway's span only when the gateway exports spans."""

from __future__ import annotations

import random
import re

from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.headers import read_head
from proxy.tracecontext import TraceContext, parse_traceparent, trace_of

HEX = "0123456789abcdef"
NEW = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


def hexes(size: int) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=size, max_size=size)


@st.composite
def valid(draw: st.DrawFn) -> bytes:
    trace_id = draw(hexes(32).filter(lambda t: t != "0" * 32))
    parent_id = draw(hexes(16).filter(lambda p: p != "0" * 16))
    flags = draw(hexes(2))
    return f"00-{trace_id}-{parent_id}-{flags}".encode()


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    good = draw(valid())
    trace_id, parent_id = good[3:35], good[36:52]
    broken = draw(
        st.sampled_from(
            [
                good.upper(),  # upper-case hex is not allowed
                good[:-1],  # a field one digit short
                good + b"0",  # ... or long
                good.replace(b"-", b"_", 1),
                b"ff" + good[2:],  # version ff is never valid
                good + b"-extra",  # version 00 has exactly four fields
                b"00-" + b"0" * 32 + good[35:],  # all-zero trace id
                good[:36] + b"0" * 16 + good[52:],  # all-zero parent id
                b"0-" + good[3:],
                good.replace(trace_id, trace_id[:-1] + b"g"),
                good.replace(parent_id, parent_id[:-1] + b"z"),
                b"",
                b"00",
            ]
        )
    )
    assume(parse_traceparent(broken) is None or broken == good)
    return broken


def traced(sent: list[tuple[bytes, bytes]], seed: int, own_span: bool) -> tuple[TraceContext, bool]:
    """The trace context of a request with ``sent`` headers, as the gateway reads it."""
    return trace_of(read_head(sent).traceparent, random.Random(seed), own_span)


def headers(*traceparents: bytes, state: bytes | None = b"vendor=1") -> list[tuple[bytes, bytes]]:
    out = [(b"traceparent", value) for value in traceparents]
    if state is not None:
        out.append((b"tracestate", state))
    return out


@given(valid(), st.booleans())
def test_a_valid_traceparent_keeps_its_trace(value: bytes, own_span: bool) -> None:
    context, keep_state = traced(headers(value), 1, own_span)
    assert keep_state
    assert context.trace_id == value[3:35].decode()
    assert context.parent_id == value[36:52].decode()
    assert context.flags == value[53:55].decode()
    if own_span:
        # The gateway's own span becomes the backend's parent, in the same trace.
        assert context.span_id != context.parent_id
        assert context.header == f"00-{context.trace_id}-{context.span_id}-{context.flags}".encode()
    else:
        assert context.header == value  # passed on unchanged


@given(malformed(), st.booleans())
def test_a_malformed_traceparent_starts_a_new_trace(value: bytes, own_span: bool) -> None:
    context, keep_state = traced(headers(value), 2, own_span)
    assert not keep_state  # its tracestate belonged to the trace not continued
    assert context.parent_id is None
    assert NEW.fullmatch(context.header)
    assert context.trace_id not in value.decode("latin-1")


def test_none_or_more_than_one_starts_a_new_trace() -> None:
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for sent in (headers(state=None), headers(good, good), headers(good, b"garbage")):
        context, keep_state = traced(sent, 3, False)
        assert not keep_state
        assert NEW.fullmatch(context.header)
        assert context.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_later_version_is_read_as_far_as_version_00_goes() -> None:
    later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
    context, keep_state = traced(headers(later), 4, False)
    assert keep_state
    assert context.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    # Passed on in the version understood here.
    assert context.header == b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_surrounding_whitespace_is_not_part_of_the_value() -> None:
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    context, _ = traced(headers(b" " + good + b"\t"), 5, False)
    assert context.header == good
    assert not context.sampled
