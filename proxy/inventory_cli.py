"""``strangler inventory`` (docs/inventory.md): several gateways' ``GET /inventory`` merged
into one, printed as a table a person reads, as route entries to paste (``--suggest``), or
written out as route tests and fixtures (``--record DIR``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from proxy.inventory import merge_reports, numbered
from proxy.rollout.edit import write_atomically


def fetch(admins: list[str], samples: bool) -> dict[str, Any]:
    """Every gateway's inventory, merged (raises httpx.HTTPError)."""
    reports = []
    for admin in admins:
        reply = httpx.get(
            f"{admin.rstrip('/')}/inventory",
            params={"samples": "1"} if samples else None,
            timeout=10,
            trust_env=False,
        )
        reply.raise_for_status()
        reports.append(reply.json())
    return merge_reports(reports)


def format_table(report: dict[str, Any]) -> str:
    lines = []
    for backend in report["backends"]:
        templates = backend["templates"]
        total = sum(t["requests"] for t in templates) + backend["other"]["requests"]
        lines.append(f"left on {backend['backend']}: {len(templates)} endpoints, {total} requests")
        width = max([len(f"{t['method']} {t['template']}") for t in templates] + [8])
        lines.append(
            f"  {'endpoint':<{width}}  {'route':<16} {'requests':>8} {'errors':>6}  last seen"
        )
        for t in templates:
            endpoint = f"{t['method']} {t['template']}"
            lines.append(
                f"  {endpoint:<{width}}  {t['route']:<16} {t['requests']:>8} {t['errors']:>6}  "
                f"{t['last_seen']}"
            )
        other = backend["other"]
        if other["requests"]:
            lines.append(
                f"  {'(other: past the cap)':<{width}}  {'':<16} {other['requests']:>8} "
                f"{other['errors']:>6}"
            )
    return "\n".join(lines) if lines else "no legacy traffic recorded yet"


def route_name(template: str) -> str:
    """A route name from a template: its words, ``{id}`` as ``id``."""
    words = [re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in template.split("/")]
    name = "-".join(w for w in words if w) or "root"
    return name[:63].strip("-") or "root"


def suggest(report: dict[str, Any]) -> str:
    """Route entries to paste under ``routes:``, one per template (its methods together),
    sending it to the legacy backend that serves it now."""
    lines = []
    taken: set[str] = set()
    for backend in report["backends"]:
        by_template: dict[str, list[dict[str, Any]]] = {}
        for t in backend["templates"]:
            by_template.setdefault(t["template"], []).append(t)
        for template, seen in by_template.items():
            path = numbered(template)
            name = route_name(template)
            base, count = name, 2
            while name in taken:
                name, count = f"{base}-{count}", count + 1
            taken.add(name)
            methods = sorted({t["method"] for t in seen})
            requests = sum(t["requests"] for t in seen)
            lines += [
                f"  # {requests} requests, last {max(t['last_seen'] for t in seen)}",
                f"  - name: {name}",
                f'    match: {{ path: "{path}", methods: [{", ".join(methods)}] }}',
                f"    backend: {backend['backend']}",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n" if lines else ""


def record(report: dict[str, Any], directory: Path) -> int:
    """Write ``routes.tests.yaml`` (a route test per sample: the request and the route that
    served it) and one JSON fixture per sample under ``fixtures/``; how many samples."""
    fixtures = directory / "fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    cases = [
        "# Recorded by `strangler inventory --record`: what the monolith served, one case per",
        "# sample. Check them with `strangler check -c TABLE --tests` (docs/inventory.md).",
    ]
    written = 0
    stems: set[str] = set()
    for backend in report["backends"]:
        for t in backend["templates"]:
            for number, sample in enumerate(t.get("samples", []), 1):
                request = sample["request"]
                target = request["path"] + (f"?{request['query']}" if request["query"] else "")
                name = route_name(t["template"])
                stem = f"{backend['backend']}-{t['method'].lower()}-{name}-{number}"
                while stem in stems:  # /cart/items and /cart-items read alike as names
                    stem += "-again"
                stems.add(stem)
                document = {"backend": backend["backend"], "template": t["template"], **sample}
                write_atomically(
                    fixtures / f"{stem}.json",
                    (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode(),
                )
                cases += [
                    f"- request: {{ method: {request['method']}, path: {json.dumps(target)} }}",
                    f"  expect: {{ route: {t['route']} }}",
                    f"  # fixture: fixtures/{stem}.json",
                ]
                written += 1
    write_atomically(directory / "routes.tests.yaml", ("\n".join(cases) + "\n").encode())
    return written
