"""The access log (proxy/accesslog.py): the exact line for a record, the time in RFC 3339,
the lines of one turn of the loop in one write, and a broken stdout that loses lines, not
requests."""

from __future__ import annotations

import asyncio
import json
import os
import select

import pytest

from proxy.accesslog import MAX_USER_AGENT, AccessLog, Finished
from proxy.tracecontext import TraceContext

pytestmark = pytest.mark.anyio

TRACE = TraceContext(
    "4bf92f3577b34da6a3ce929d0e0e4736", None, "00f067aa0ba902b7", "01", b"00-...-01"
)


def record(**fields: object) -> Finished:
    values: dict[str, object] = {
        "started_at": 1_764_603_000.25,  # 2025-12-01T15:30:00.250Z
        "request_id": "rid-1",
        "trace": TRACE,
        "client_ip": "198.51.100.7",
        "method": "GET",
        "path": "/products/7",
        "route": "catalog",
        "backend": "monolith",
        "kind": "legacy",
        "user_agent": "curl/8.5.0",
        "duration": 0.0125,
        "upstream": 0.01,
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 1234,
        "attempts": 2,
        "fallback": "monolith",
        "error": None,
        "authorizer": "legacy-session",
        "authorizer_result": "cached",
        "authorizer_wait": 0.0004,
    }
    values.update(fields)
    return Finished(**values)  # type: ignore[arg-type]


def test_a_line_holds_exactly_the_documented_fields_in_order() -> None:
    line = AccessLog().line(record())
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert list(json.loads(line).items()) == [
        ("time", "2025-12-01T15:30:00.262Z"),
        ("request_id", "rid-1"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("client_ip", "198.51.100.7"),
        ("method", "GET"),
        ("path", "/products/7"),
        ("status", 200),
        ("route", "catalog"),
        ("backend", "monolith"),
        ("kind", "legacy"),
        ("duration_ms", 12.5),
        ("upstream_ms", 10.0),
        ("bytes_in", 0),
        ("bytes_out", 1234),
        ("attempts", 2),
        ("fallback", "monolith"),
        ("error", None),
        ("authorizer", "legacy-session"),
        ("authorizer_result", "cached"),
        ("authorizer_ms", 0.4),
        ("user_agent", "curl/8.5.0"),
    ]


def test_nothing_without_a_value_is_invented_and_odd_bytes_stay_one_line() -> None:
    line = AccessLog().line(
        record(upstream=None, user_agent='x\n"y"\u2028' + "z" * 2000, path="/a\nb")
    )
    fields = json.loads(line)
    assert fields["upstream_ms"] is None
    assert fields["user_agent"] == ('x\n"y"\u2028' + "z" * 2000)[:MAX_USER_AGENT]
    assert fields["path"] == "/a\nb"
    assert line.count(b"\n") == 1  # escaped: one request, one line
    assert line.isascii()


def test_the_time_is_made_once_a_second_and_carries_milliseconds() -> None:
    log = AccessLog()
    assert log._time(1_764_603_000.999) == "2025-12-01T15:30:00.999Z"
    assert log._time(1_764_603_001.0) == "2025-12-01T15:30:01.000Z"
    assert log._time(1_764_603_001.5004) == "2025-12-01T15:30:01.500Z"


async def test_lines_wait_a_tenth_of_a_second_or_64_kib_then_go_out_together() -> None:
    read, write = os.pipe()
    log = AccessLog(write)

    def received(count: int) -> list[bytes]:
        data = b""
        while data.count(b"\n") < count:
            data += os.read(read, 1 << 20)
        return data.splitlines()

    try:
        for number in range(3):
            log.write(record(request_id=f"rid-{number}"))
        await asyncio.sleep(0)
        assert len(log._lines) == 3  # the writer is woken a few times a second, not per line
        await asyncio.sleep(0.15)
        assert log._lines == []
        ids = [json.loads(line)["request_id"] for line in received(3)]
        assert ids == ["rid-0", "rid-1", "rid-2"]
        # 64 KiB waiting are handed over at once, without waiting for the timer.
        many = 64 * 1024 // len(log.line(record())) + 1
        for _ in range(many):
            log.write(record())
        assert log._lines == []
        assert len(received(many)) == many
        assert log.dropped == 0
    finally:
        log.close()
        os.close(read)
        os.close(write)


async def test_a_stalled_stdout_never_blocks_and_drops_past_its_bound() -> None:
    read, write = os.pipe()  # nobody reads until the end: the pipe fills, the writer waits
    log = AccessLog(write, max_pending=200 * 1024)
    try:
        line = len(log.line(record()))
        for _ in range(4000):  # ~1.3 MB of lines: more than the pipe and the bound together
            log.write(record())
            await asyncio.sleep(0)  # each turn of the loop returns at once
        log.flush()  # what the timer would hand over a tenth of a second later
        assert log.dropped > 0
        kept = 4000 - log.dropped
        # What was not dropped is written whole once the reader reads.
        received = b""
        while len(received) < kept * line:
            received += os.read(read, 1 << 20)
        assert len(received) == kept * line
        assert received.count(b"\n") == kept
    finally:
        log.close(timeout=0.1)
        os.close(read)
        os.close(write)


async def test_a_closed_stdout_loses_lines_not_requests(caplog: pytest.LogCaptureFixture) -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads: the write fails with EPIPE
    try:
        log = AccessLog(write)
        log.write(record())
        await asyncio.sleep(0)  # handed to the writer, which fails, logs, and raises nothing
        log.close()
    finally:
        os.close(write)
    assert "access log lost 1 lines" in caplog.text
    assert log.dropped == 1


async def test_writes_are_whole_lines_a_pipe_takes_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # --workers share one stdout: a write of at most PIPE_BUF bytes is never interleaved.
    read, write = os.pipe()
    sizes: list[bytes] = []
    real = os.write

    def recording(fd: int, data: bytes) -> int:
        sizes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", recording)
    log = AccessLog(write)
    try:
        long_path = "/" + "p" * 6000  # a line longer than PIPE_BUF goes alone
        for number in range(40):
            log.write(record(path=long_path if number == 20 else "/short"))
        log.close()
        assert all(piece.endswith(b"\n") for piece in sizes)
        assert [len(piece) > select.PIPE_BUF for piece in sizes].count(True) == 1
        assert max(len(p) for p in sizes if b"ppppp" not in p) <= select.PIPE_BUF
        data = b""
        while data.count(b"\n") < 40:
            data += os.read(read, 1 << 20)
        assert b"".join(sizes) == data
    finally:
        os.close(read)
        os.close(write)
