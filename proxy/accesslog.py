"""The access log (docs/observability.md, "Access log"): one JSON line per request on stdout,
written when its response ends (a tunnel's when it closes), and the record it is made from,
which the span exporter reads too.

A request costs one line, its strings escaped by the json module's C encoder; the lines of up
to a tenth of a second (or 64 KiB) are handed, as one piece, to a writer thread, which writes
them to stdout: the thread wakes ten times a second under load, not once per request, which
cost more than the line itself (measured, bench/README.md). The event loop never waits on
stdout: a reader that stalls (a full pipe, a slow log collector) holds the writer
thread, not the requests, and once ``MAX_PENDING`` bytes wait, further lines are dropped and
counted (:attr:`AccessLog.dropped`) rather than held without bound. The time is formatted once
per second.
Nothing in a line comes from a query string, a cookie or a credential: the path is the
normalised one without its query, and the only header copied is ``User-Agent``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from proxy.tracecontext import TraceContext

log = logging.getLogger("strangler.accesslog")

#: Longest User-Agent kept in a line; longer ones are cut (a header may be 64 KiB).
MAX_USER_AGENT = 512
#: Bytes of lines waiting for stdout before new ones are dropped.
MAX_PENDING = 8 * 1024 * 1024
#: Lines go to the writer after this long, or once this many bytes wait, whichever is first.
FLUSH_SECONDS = 0.1
FLUSH_BYTES = 64 * 1024
#: What a pipe writes whole, never interleaved with another writer's bytes (POSIX PIPE_BUF).
_ATOMIC = select.PIPE_BUF

_string = json.encoder.encode_basestring_ascii


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _ms(seconds: float | None) -> str:
    return "null" if seconds is None else repr(round(seconds * 1000, 3))


@dataclass(slots=True)
class Finished:
    """One request as it ended: what the access log writes and a span is made of."""

    #: Unix time when the gateway took the request (its head read).
    started_at: float
    request_id: str
    trace: TraceContext
    client_ip: str
    method: str
    #: The normalised path, without the query.
    path: str
    route: str
    backend: str
    kind: str
    user_agent: str | None
    #: Seconds to the end of the response (a tunnel: to its close).
    duration: float = 0.0
    #: Seconds to the response head from the backend that answered; None without one.
    upstream: float | None = None
    #: The status sent; 499 when the client went away first; 101 for a tunnel.
    status: int = 0
    #: Body bytes received from the client and sent to it (a tunnel: relayed each way).
    bytes_in: int = 0
    bytes_out: int = 0
    attempts: int = 0
    #: The backend that answered instead of the chosen one, or None.
    fallback: str | None = None
    #: The gateway's error code, or None.
    error: str | None = None
    #: The route's authorizer, its result (allow, deny, unauthenticated, error, cached) and
    #: the seconds the request waited for it; None on a route without one.
    authorizer: str | None = None
    authorizer_result: str | None = None
    authorizer_wait: float | None = None
    #: What happened on the way, for a span's events: (name, Unix time, attributes).
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)


class AccessLog:
    """Writes :class:`Finished` records as JSON lines to a file descriptor (stdout)."""

    def __init__(self, fd: int = 1, max_pending: int = MAX_PENDING) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        #: Lines dropped because stdout did not keep up (or failed).
        self.dropped = 0

    def write(self, record: Finished) -> None:
        line = self.line(record)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def line(self, record: Finished) -> bytes:
        """The record as one line of JSON (ASCII: everything else escaped), the fields in the
        documented order."""
        agent = record.user_agent
        if agent is not None and len(agent) > MAX_USER_AGENT:
            agent = agent[:MAX_USER_AGENT]
        return (
            f'{{"time":"{self._time(record.started_at + record.duration)}",'
            f'"request_id":{_string(record.request_id)},'
            f'"trace_id":"{record.trace.trace_id}",'
            f'"client_ip":{_string(record.client_ip)},'
            f'"method":{_string(record.method)},'
            f'"path":{_string(record.path)},'
            f'"status":{record.status},'
            f'"route":{_string(record.route)},'
            f'"backend":{_string(record.backend)},'
            f'"kind":{_string(record.kind)},'
            f'"duration_ms":{_ms(record.duration)},'
            f'"upstream_ms":{_ms(record.upstream)},'
            f'"bytes_in":{record.bytes_in},'
            f'"bytes_out":{record.bytes_out},'
            f'"attempts":{record.attempts},'
            f'"fallback":{_text(record.fallback)},'
            f'"error":{_text(record.error)},'
            f'"authorizer":{_text(record.authorizer)},'
            f'"authorizer_result":{_text(record.authorizer_result)},'
            f'"authorizer_ms":{_ms(record.authorizer_wait)},'
            f'"user_agent":{_text(agent)}}}\n'
        ).encode("ascii")

    def _time(self, at: float) -> str:
        """RFC 3339 in UTC with milliseconds; the part down to the second made once a second."""
        second = int(at)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((at - second) * 1000):03d}Z"

    def flush(self) -> None:
        """Hand the lines waiting to the writer thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        self._size = 0
        if not lines:
            return
        data = b"".join(lines)
        with self._lock:
            if self._pending + len(data) > self._max_pending:
                self.dropped += len(lines)
                return
            self._pending += len(data)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_all, name="access-log", daemon=True)
            self._writer.start()
        self._queue.put(data)

    def _write_all(self) -> None:
        """The writer thread: blocking writes to stdout, as long as it takes. Each write is
        whole lines of at most PIPE_BUF bytes where it can be, which a pipe takes whole: the
        lines of ``--workers`` sharing one stdout never interleave (a line longer than that,
        a path of kilobytes, goes alone)."""
        while (data := self._queue.get()) is not None:
            size = len(data)
            start = 0
            try:
                while start < size:
                    end = data.rfind(b"\n", start, start + _ATOMIC) + 1
                    if end <= start:  # one line longer than a pipe takes at once
                        end = data.index(b"\n", start) + 1
                    piece = memoryview(data)[start:end]
                    while piece:
                        piece = piece[os.write(self._fd, piece) :]
                    start = end
            except OSError as exc:  # a closed or broken stdout must not take requests with it
                lines = data.count(b"\n", start)
                with self._lock:
                    self.dropped += lines
                log.warning("access log lost %d lines: %s", lines, exc)
            with self._lock:
                self._pending -= size

    def close(self, timeout: float = 2.0) -> None:
        """Write what is waiting (for at most ``timeout`` seconds), then stop the thread."""
        self.flush()
        writer = self._writer
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout)
            self._writer = None
