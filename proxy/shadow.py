"""Shadow traffic: a sampled copy of a route's requests goes to another backend, and its answer
is compared with the one the client got (docs/shadow.md).

The client's request is never slowed: the gateway only copies what passes (the request body
as the primary reads it, and the primary's response, each up to ``max_body``) and hands a job
to a bounded queue; a few worker tasks send the copy, wait for the primary to finish, and
compare. A full queue drops the job (counted). Results are counted per route and backend, and
the last mismatches of each route are kept with their differences.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from proxy.asgi import RawHeaders
from proxy.backends.base import Answer, Backend, ProxyRequest
from proxy.jsondiff import PathPatterns, differences, general
from proxy.table import model
from proxy.timefmt import iso_time

if TYPE_CHECKING:
    from proxy.routes import CompiledShadow

log = logging.getLogger("strangler.shadow")

RESULTS = ("match", "mismatch", "error", "dropped")
#: Jobs waiting for a worker; more are dropped. Each holds at most two bodies of ``max_body``.
QUEUE = 64
WORKERS = 8
#: Mismatches kept per route, and differences kept per mismatch.
KEPT = 20
DIFFERENCES = 20
#: Noise paths learnt per route, at most.
NOISE = 100
SHADOW_HEADER = (b"x-strangler-shadow", b"1")


@dataclass(slots=True)
class Captured:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    too_large: bool = False


class ResponseTap:
    """Copies a response as it is sent, up to ``limit`` body bytes."""

    __slots__ = ("captured", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.captured = Captured()

    def start(self, status: int, headers: RawHeaders) -> None:
        self.captured.status = status
        self.captured.headers = list(headers)

    def body(self, chunk: bytes, more: bool) -> None:
        captured = self.captured
        if len(captured.body) + len(chunk) > self.limit:
            captured.too_large = True
        elif chunk:
            captured.body += chunk
        if not more:
            captured.complete = True


class BodyCopy:
    """A copy of the request body as the primary reads it, up to ``limit`` bytes; ``done`` once
    the whole body has been read (never, when the primary stopped early)."""

    __slots__ = ("_limit", "copy", "done", "too_large")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.copy = bytearray()
        self.too_large = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, chunk: bytes) -> None:
        if len(self.copy) + len(chunk) > self._limit:
            self.too_large = True
        elif not self.too_large:
            self.copy += chunk

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass(slots=True)
class Job:
    """One mirrored request: the taps the gateway feeds, and :meth:`finish` when the primary's
    exchange is over (``complete``: its response reached the client whole)."""

    route: str
    shadow: CompiledShadow
    counters: dict[str, Any]
    request: ProxyRequest
    primary_backend: Backend
    body: BodyCopy | None
    tap: ResponseTap
    primary_done: asyncio.Future[bool]

    def finish(self, complete: bool) -> None:
        if not self.primary_done.done():
            self.primary_done.set_result(complete)


@dataclass(slots=True)
class RouteRecord:
    backend: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    mismatches: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=KEPT)
    )
    noise: set[str] = field(default_factory=set)


class Shadower:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.records: dict[str, RouteRecord] = {}

    async def start(self) -> None:
        self._queue = asyncio.Queue(QUEUE)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(WORKERS)]

    async def aclose(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def mirror(
        self,
        route: str,
        shadow: CompiledShadow,
        counters: dict[str, Any],
        request: ProxyRequest,
        primary_backend: Backend,
    ) -> Job | None:
        """A job for this request, with the taps the gateway must put in place, or None when
        the queue is full (counted as dropped)."""
        queue = self._queue
        if queue is None or queue.full():
            self._count(route, shadow, counters, "dropped")
            return None
        limit = shadow.spec.max_body
        body = BodyCopy(limit) if request.body is not None else None
        job = Job(
            route,
            shadow,
            counters,
            request,
            primary_backend,
            body,
            ResponseTap(limit),
            asyncio.get_running_loop().create_future(),
        )
        queue.put_nowait(job)
        return job

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                result = await self._run(job)
            except Exception:
                log.exception("route=%s shadow comparison failed", job.route)
                result = "error"
            self._count(job.route, job.shadow, job.counters, result)

    async def _run(self, job: Job) -> str:
        spec = job.shadow.spec
        body = b""
        if job.body is not None:
            # The copy is complete once the primary has read the whole body; a primary that
            # finished without reading it all leaves nothing to mirror.
            await _first(job.body.done, job.primary_done, spec.timeout)
            if not job.body.done.done() or job.body.too_large:
                return "dropped"
            body = bytes(job.body.copy)
        mirrored = await _call(job.shadow.backend, job.request, body, spec)
        if not await _wait(job.primary_done, spec.timeout) or not job.primary_done.result():
            return "dropped"
        primary = job.tap.captured
        if not primary.complete or primary.too_large:
            return "dropped"
        if mirrored is None:
            return "error"
        if mirrored.too_large:
            return "dropped"
        record = self._record(job.route, job.shadow)
        if spec.learn_noise and job.request.method in model.SAFE_METHODS:
            again = await _call(job.primary_backend, job.request, body, spec)
            if again is not None and again.complete and not again.too_large:
                self._learn(record, primary, again, spec)
        found = compare(
            primary, mirrored, spec, job.shadow.ignore, record.noise, job.request.method != "HEAD"
        )
        if not found:
            return "match"
        query = job.request.query.decode("latin-1")
        record.mismatches.append(
            {
                "at": iso_time(time.time()),
                "request_id": job.request.request_id,
                "method": job.request.method,
                "path": job.request.path,
                "query": query if spec.record_query else redact_query(query),
                "primary_backend": job.primary_backend.name,
                "differences": [_kept(d) for d in found[:DIFFERENCES]],
                "more": max(0, len(found) - DIFFERENCES),
            }
        )
        return "mismatch"

    def _learn(
        self, record: RouteRecord, first: Captured, second: Captured, spec: model.Shadow
    ) -> None:
        """Fields that differ between two answers of the primary are noise from then on."""
        for difference in compare(first, second, spec, PathPatterns(()), set(), True):
            path = difference["path"]
            if len(record.noise) < NOISE and path != "status":
                record.noise.add(general(path) if path.startswith("$") else path)

    def _record(self, route: str, shadow: CompiledShadow) -> RouteRecord:
        record = self.records.get(route)
        if record is None or record.backend != shadow.backend.name:
            record = self.records[route] = RouteRecord(shadow.backend.name)
        return record

    def _count(
        self, route: str, shadow: CompiledShadow, counters: dict[str, Any], result: str
    ) -> None:
        self._record(route, shadow).counts[result] += 1
        counters[result].inc()

    def report(self, routes: dict[str, CompiledShadow]) -> dict[str, Any]:
        """``GET /shadow``: per shadowed route, counts, parity, learnt noise, last mismatches."""
        entries = []
        for route, shadow in routes.items():
            record = self._record(route, shadow)
            compared = record.counts["match"] + record.counts["mismatch"]
            spec = shadow.spec
            entries.append(
                {
                    "route": route,
                    "backend": shadow.backend.name,
                    "percent": spec.percent / 100,
                    "methods": sorted(spec.methods),
                    "counts": dict(record.counts),
                    "parity": record.counts["match"] / compared if compared else None,
                    "ignored": list(spec.ignore),
                    "learned_noise": sorted(record.noise),
                    "mismatches": list(reversed(record.mismatches)),
                }
            )
        return {"routes": entries}


#: What a mismatch record shows in place of a value it must not keep.
REDACTED = "REDACTED"


def redact_query(query: str) -> str:
    """The query's parameter names, their values replaced (tokens, emails and ids travel in
    query strings: ``?access_token=...``); a route keeps them with ``record_query: true``."""
    return "&".join(
        part.split("=", 1)[0] + "=" + REDACTED if "=" in part else part for part in query.split("&")
    )


def _kept(difference: dict[str, Any]) -> dict[str, Any]:
    """A difference as a mismatch record keeps it: a header's name, never its values (a
    Set-Cookie or an Authorization would otherwise be readable on the admin port)."""
    if not difference["path"].startswith("header "):
        return difference
    return {
        "path": difference["path"],
        "primary": REDACTED if difference["primary"] is not None else "(absent)",
        "shadow": REDACTED if difference["shadow"] is not None else "(absent)",
    }


def compare(
    primary: Captured,
    shadow: Captured,
    spec: model.Shadow,
    ignore: PathPatterns,
    noise: set[str],
    bodies: bool,
) -> list[dict[str, Any]]:
    """The differences that count: status, the listed headers, and the body (structurally when
    both are JSON) unless ``bodies`` is false (an answer to HEAD has none to compare)."""
    found: list[dict[str, Any]] = []
    if primary.status != shadow.status:
        found.append({"path": "status", "primary": primary.status, "shadow": shadow.status})
    for name in spec.headers:
        ours, theirs = _header(primary, name), _header(shadow, name)
        path = f"header {name}"
        if ours != theirs and path not in noise:
            found.append({"path": path, "primary": ours, "shadow": theirs})
    if not bodies:
        return found
    first, second = _json(primary), _json(shadow)
    if first is not _NOT_JSON and second is not _NOT_JSON:
        noisy = PathPatterns(sorted(noise)) if noise else None
        for difference in differences(first, second):
            if ignore.matches(difference.path):
                continue
            if noisy is not None and noisy.matches(general(difference.path)):
                continue
            found.append(difference.as_json())
    elif bytes(primary.body) != bytes(shadow.body) and "body" not in noise:
        found.append(
            {"path": "body", "primary": _bytes(primary.body), "shadow": _bytes(shadow.body)}
        )
    return found


_NOT_JSON = object()


def _json(captured: Captured) -> Any:
    content_type = _header(captured, "content-type") or ""
    if "json" not in content_type:
        return _NOT_JSON
    try:
        return json.loads(captured.body)
    except ValueError:
        return _NOT_JSON


def _header(captured: Captured, name: str) -> str | None:
    wanted = name.encode("latin-1")
    values = [v.decode("latin-1") for n, v in captured.headers if n.lower() == wanted]
    return ", ".join(values) if values else None


def _bytes(body: bytearray) -> str:
    text = bytes(body[:200]).decode("utf-8", "replace")
    return text + ("…" if len(body) > 200 else "") + f" ({len(body)} bytes)"


async def _first(one: asyncio.Future[Any], other: asyncio.Future[Any], seconds: float) -> None:
    """Until either future is done, or ``seconds`` have passed."""
    await asyncio.wait((one, other), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)


async def _wait(future: asyncio.Future[Any], seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await asyncio.shield(future)
    except TimeoutError:
        return False
    return True


async def _call(
    backend: Backend, request: ProxyRequest, body: bytes, spec: model.Shadow
) -> Captured | None:
    """Send a copy of ``request`` to ``backend``; its answer (``too_large`` past the body
    limit), or None when it failed."""
    task = asyncio.current_task()
    assert task is not None
    copy = replace(
        request,
        task=task,
        headers=[*request.headers, SHADOW_HEADER],
        body=_once(body) if body or request.body is not None else None,
    )
    tap = ResponseTap(spec.max_body)
    try:
        async with asyncio.timeout(spec.timeout):
            answer = await backend.call(copy)
            try:
                await _read(answer, tap)
            finally:
                answer.close()
    except Exception as exc:  # a failing shadow is a result, never a crash
        log.info("route=%s shadow %s failed: %s", request.route, backend.name, exc)
        return None
    return tap.captured if tap.captured.complete else None


async def _read(answer: Answer, tap: ResponseTap) -> None:
    """A shadow's answer, into its tap (at most the tap's limit is kept)."""
    tap.start(answer.status, [(name.lower(), value) for name, value in answer.headers])
    stream = answer.stream
    if stream is None:
        tap.body(answer.body, False)
        return
    while chunk := await stream.next_chunk():
        tap.body(chunk, True)
        if tap.captured.too_large:
            return
    tap.body(b"", False)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body
