"""What the monolith still serves (docs/inventory.md): every legacy backend's traffic by method
and path template, with a few recorded exchanges per template, bounded whatever the traffic.

- :func:`fold` turns a normalised path into a template: a segment that is an identifier (a
  number, a UUID, long hex, a base64-like token, a date, a prefixed id such as ``cus_4f9Xk2``)
  becomes ``{id}``; words stay. The most recent folds are cached, so a busy path costs a
  dictionary lookup.
- :class:`Inventory` counts per backend at most :data:`MAX_TEMPLATES` templates; the requests
  of templates past the cap are counted in ``other``, so an attack of random paths cannot grow
  it. Samples (the first :data:`SAMPLES_PER_TEMPLATE` exchanges of a template) are redacted when
  they are taken and share one byte budget.
- Never in Prometheus: templates are unbounded label values.

With ``--workers``, each worker writes its inventory to a file in the metrics directory every
second it changed, and ``GET /inventory`` merges every worker's.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.asgi import RawHeaders
from proxy.rollout.edit import write_atomically
from proxy.shadow import REDACTED
from proxy.timefmt import iso_time

log = logging.getLogger("strangler.inventory")

MAX_TEMPLATES = 1000
#: A template longer than this is counted in ``other``: no real endpoint has one.
MAX_TEMPLATE_LENGTH = 512
SAMPLES_PER_TEMPLATE = 3
MAX_SAMPLE_BODY = 64 * 1024
#: All samples of all backends together, in bytes.
MAX_SAMPLE_BYTES = 16 * 1024 * 1024
FOLD_CACHE = 4096
#: Copies of a template's exchanges tried before it stops being sampled (they never completed,
#: or were answered by another backend, or did not fit).
MAX_SAMPLE_ATTEMPTS = 10
#: Request and response headers whose values never go into a sample.
ALWAYS_REDACTED = frozenset({b"cookie", b"authorization", b"set-cookie", b"proxy-authorization"})
#: JSON keys (any case, as part of the name) whose values are redacted in sampled bodies.
_SECRET_KEY = re.compile(r"password|passwd|token|secret|session|authorization|api[_-]?key", re.I)

_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)?\Z")
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\Z", re.I)
_HEX = re.compile(r"[0-9a-f]{16,}\Z", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}={0,2}\Z|[A-Za-z0-9+/]{20,}={0,2}\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9:.]+Z?)?\Z")
#: Stripe-style ids (``cus_4f9Xk2...``, ``ord-7Hq2...``): a short word, a separator, then letters
#: and digits mixed.
_PREFIXED = re.compile(
    r"[a-z]{2,8}[_-](?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{6,}\Z"
)
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[A-Za-z]")


def is_identifier(segment: str) -> bool:
    """Whether a path segment stands for one thing of many (folded to ``{id}``)."""
    if _NUMBER.match(segment) or _UUID.match(segment) or _DATE.match(segment):
        return True
    if _HEX.match(segment) and _DIGIT.search(segment):
        return True
    if _TOKEN.match(segment) and _DIGIT.search(segment) and _LETTER.search(segment):
        return True
    return _PREFIXED.match(segment) is not None


def fold(path: str) -> str:
    """The template of a normalised path: identifier segments are ``{id}``."""
    if path == "/":
        return path
    return "/".join("{id}" if is_identifier(s) else s for s in path.split("/"))


def numbered(template: str) -> str:
    """A template as a route path: repeated parameters numbered (``{id}``, ``{id2}``, ...)."""
    count = 0

    def name(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return "{id}" if count == 1 else f"{{id{count}}}"

    return re.sub(r"\{id\}", name, template)


@dataclass(slots=True)
class Entry:
    route: str
    requests: int = 0
    errors: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    #: Each sample as its JSON text: what it costs in memory is its length.
    samples: list[str] = field(default_factory=list)
    #: Exchanges copied to be sampled, kept or not.
    attempts: int = 0


@dataclass(slots=True)
class Other:
    requests: int = 0
    errors: int = 0


class Inventory:
    """This process's inventory; :meth:`report` is ``GET /inventory``'s body."""

    def __init__(self, redact_headers: frozenset[bytes] = frozenset()) -> None:
        #: Backend -> (method, template) -> Entry.
        self.backends: dict[str, dict[tuple[str, str], Entry]] = {}
        self.other: dict[str, Other] = {}
        self.sample_bytes = 0
        self._redact = ALWAYS_REDACTED | redact_headers
        self._folds: OrderedDict[str, str] = OrderedDict()
        #: Whether anything changed since :meth:`snapshot` last ran.
        self.dirty = False

    def template(self, path: str) -> str:
        """The path's template, from a cache of the busiest recent paths (least recently used
        first out; a path too long to be a template is never kept, so the cache stays small
        in bytes whatever the paths)."""
        folds = self._folds
        found = folds.get(path)
        if found is not None:
            folds.move_to_end(path)
            return found
        found = fold(path)
        if len(path) <= MAX_TEMPLATE_LENGTH:
            folds[path] = found
            if len(folds) > FOLD_CACHE:
                folds.popitem(last=False)
        return found

    def _entry(self, backend: str, route: str, method: str, template: str) -> Entry | None:
        entries = self.backends.get(backend)
        if entries is None:
            entries = self.backends[backend] = {}
        entry = entries.get((method, template))
        if entry is None:
            if len(entries) >= MAX_TEMPLATES or len(template) > MAX_TEMPLATE_LENGTH:
                return None
            entry = entries[(method, template)] = Entry(route)
        return entry

    def count(self, backend: str, route: str, method: str, template: str, status: int) -> None:
        """One request the legacy ``backend`` answered with ``status``."""
        self.dirty = True
        now = time.time()
        error = status >= 500
        entry = self._entry(backend, route, method, template)
        if entry is None:
            other = self.other.get(backend)
            if other is None:
                other = self.other[backend] = Other()
            other.requests += 1
            other.errors += error
            return
        if not entry.requests:
            entry.first_seen = now
        entry.route = route  # the route that last sent it (--record's route tests expect it)
        entry.requests += 1
        entry.errors += error
        entry.last_seen = now

    def wants_sample(self, backend: str, method: str, template: str) -> bool:
        """Whether the next exchange of this template should be recorded."""
        if self.sample_bytes >= MAX_SAMPLE_BYTES:
            return False
        entry = self.backends.get(backend, {}).get((method, template))
        if entry is None:
            entries = self.backends.get(backend, {})
            return len(entries) < MAX_TEMPLATES and len(template) <= MAX_TEMPLATE_LENGTH
        # Exchanges that never complete (or always fall back) stop being copied after a while.
        return len(entry.samples) < SAMPLES_PER_TEMPLATE and entry.attempts < MAX_SAMPLE_ATTEMPTS

    def add_sample(
        self,
        backend: str,
        method: str,
        template: str,
        request: tuple[str, bytes, RawHeaders, bytes | None],
        response: tuple[int, RawHeaders, bytes | None],
    ) -> None:
        """Record one exchange, redacted: the request's path, query, headers and body (None:
        larger than :data:`MAX_SAMPLE_BODY`), the response's status, headers and body."""
        entry = self.backends.get(backend, {}).get((method, template))
        if entry is None or len(entry.samples) >= SAMPLES_PER_TEMPLATE:
            return
        entry.attempts += 1
        path, query, request_headers, request_body = request
        status, response_headers, response_body = response
        # (A shadowed request's copies are the shadow's, whose limit may be larger.)
        if request_body is not None and len(request_body) > MAX_SAMPLE_BODY:
            request_body = None
        if response_body is not None and len(response_body) > MAX_SAMPLE_BODY:
            response_body = None
        sample = {
            "request": {
                "method": method,
                "path": path,
                "query": _redacted_query(query.decode("latin-1")),
                "headers": self._headers(request_headers),
                "body": self._body(request_body, request_headers),
            },
            "response": {
                "status": status,
                "headers": self._headers(response_headers),
                "body": self._body(response_body, response_headers),
            },
        }
        text = json.dumps(sample)
        if self.sample_bytes + len(text) > MAX_SAMPLE_BYTES:
            return
        self.sample_bytes += len(text)
        entry.samples.append(text)
        self.dirty = True

    def _headers(self, headers: RawHeaders) -> list[list[str]]:
        return [
            [
                name.decode("latin-1"),
                REDACTED
                if name in self._redact or _SECRET_KEY.search(name.decode("latin-1"))
                else value.decode("latin-1"),
            ]
            for name, value in headers
        ]

    def _body(self, body: bytes | None, headers: RawHeaders) -> dict[str, Any] | None:
        """A body as a sample keeps it: JSON with its secrets redacted, UTF-8 text, or base64."""
        if body is None:
            return None
        kind = next((v for n, v in headers if n == b"content-type"), b"").lower()
        if b"json" in kind:
            try:
                return {"json": _redacted(json.loads(body))}
            except ValueError:
                pass
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(body).decode("ascii")}
        if b"x-www-form-urlencoded" in kind:
            return {"text": _redacted_query(text)}  # a login form's password
        return {"text": text}

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON: what a worker writes for the others to merge."""
        return {
            "backends": {
                backend: [
                    [
                        method,
                        template,
                        e.route,
                        e.requests,
                        e.errors,
                        e.first_seen,
                        e.last_seen,
                        e.samples,
                    ]
                    for (method, template), e in entries.items()
                ]
                for backend, entries in self.backends.items()
            },
            "other": {name: [o.requests, o.errors] for name, o in self.other.items()},
        }

    def save(self, directory: str) -> None:
        """This worker's snapshot into ``directory``, replacing its last one, when it changed."""
        if not self.dirty:
            return
        self.dirty = False
        try:
            write_atomically(Path(directory) / own_file(), json.dumps(self.snapshot()).encode())
        except OSError as exc:  # the metrics' flush goes on; the next change tries again
            self.dirty = True
            log.warning("cannot write the inventory for the other workers: %s", exc)


def merge(
    snapshots: list[dict[str, Any]],
    kinds: dict[str, str] | None = None,
    samples: bool = False,
) -> dict[str, Any]:
    """``GET /inventory``'s body from the snapshots of every worker (or replica): counts summed,
    first and last seen the earliest and latest, samples up to the limit (with ``samples``).
    ``kinds`` limits it to the legacy backends of the table in force (backend -> kind)."""
    backends: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    other: dict[str, list[int]] = {}
    for snapshot in snapshots:
        for backend, rows in snapshot["backends"].items():
            merged = backends.setdefault(backend, {})
            for method, template, route, requests, errors, first, last, kept in rows:
                entry = merged.get((method, template))
                if entry is None:
                    merged[(method, template)] = {
                        "route": route, "requests": requests, "errors": errors,
                        "first": first, "last": last, "samples": list(kept),
                    }  # fmt: skip
                    continue
                entry["requests"] += requests
                entry["errors"] += errors
                entry["first"] = min(entry["first"], first)
                if last > entry["last"]:
                    entry["last"], entry["route"] = last, route
                entry["samples"] += kept[: SAMPLES_PER_TEMPLATE - len(entry["samples"])]
        for backend, (requests, errors) in snapshot["other"].items():
            total = other.setdefault(backend, [0, 0])
            total[0] += requests
            total[1] += errors
    report = []
    for backend in sorted(set(backends) | set(other)):
        if kinds is not None and kinds.get(backend) != "legacy":
            continue
        entries = sorted(
            backends.get(backend, {}).items(), key=lambda item: (-item[1]["requests"], item[0])
        )
        rest = list(other.get(backend, [0, 0]))
        for _, overflow in entries[MAX_TEMPLATES:]:  # merged from replicas past the cap
            rest[0] += overflow["requests"]
            rest[1] += overflow["errors"]
        report.append(
            {
                "backend": backend,
                "templates": [
                    {
                        "method": method,
                        "template": template,
                        "route": e["route"],
                        "requests": e["requests"],
                        "errors": e["errors"],
                        "first_seen": iso_time(e["first"]),
                        "last_seen": iso_time(e["last"]),
                        **({"samples": [json.loads(t) for t in e["samples"]]} if samples else {}),
                    }
                    for (method, template), e in entries[:MAX_TEMPLATES]
                ],
                "other": {"requests": rest[0], "errors": rest[1]},
            }
        )
    return {"backends": report}


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several gateways' ``GET /inventory`` answers as one (``strangler inventory`` over
    replicas): turned back into snapshots and merged."""
    snapshots = []
    for report in reports:
        snapshots.append(
            {
                "backends": {
                    b["backend"]: [
                        [
                            t["method"],
                            t["template"],
                            t["route"],
                            t["requests"],
                            t["errors"],
                            _epoch(t["first_seen"]),
                            _epoch(t["last_seen"]),
                            [json.dumps(sample) for sample in t.get("samples", [])],
                        ]
                        for t in b["templates"]
                    ]
                    for b in report["backends"]
                },
                "other": {
                    b["backend"]: [b["other"]["requests"], b["other"]["errors"]]
                    for b in report["backends"]
                },
            }
        )
    return merge(snapshots, samples=True)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def own_file() -> str:
    """This worker's inventory file in the metrics directory."""
    return f"inventory-{os.getpid()}.json"


def worker_snapshots(directory: str) -> list[dict[str, Any]]:
    """Every other worker's last snapshot in ``directory`` (this worker's live inventory is
    newer than its file)."""
    found = []
    for path in sorted(Path(directory).glob("inventory-*.json")):
        if path.name == own_file():
            continue
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def _redacted_query(query: str) -> str:
    """A query (or a form body) with the values of secret-looking parameters redacted; the
    others kept, so that the sample can be replayed."""
    if not query:
        return query
    return "&".join(
        f"{part.split('=', 1)[0]}={REDACTED}"
        if "=" in part and _SECRET_KEY.search(part.split("=", 1)[0])
        else part
        for part in query.split("&")
    )


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if _SECRET_KEY.search(str(key)) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
