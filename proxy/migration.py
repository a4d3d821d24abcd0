"""The migration report: per route, configured and observed legacy vs new, and the totals.

One function builds it from the live table and the counts since start; the admin API serves it
as JSON, the admin page and ``strangler status`` draw it. Shares are fractions from 0 to 1, and
``null`` where nothing was observed yet.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.metrics import Metrics
from proxy.routes import CompiledTable
from proxy.table.model import WEIGHT_SCALE, Kind
from proxy.timefmt import iso_time


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else iso_time(timestamp)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def migration_report(
    table: CompiledTable, metrics: Metrics, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    seen = metrics.observed()
    routes = []
    total = {Kind.LEGACY.value: 0, Kind.NEW.value: 0}
    fully_new = 0
    for route in sorted(table.router.routes, key=lambda r: r.spec.index):
        observed = {Kind.LEGACY.value: 0, Kind.NEW.value: 0}
        backends = []
        configured_legacy = 0
        for backend, weight in route.backends:
            answered = seen.count(route.name, backend.name)
            observed[backend.kind.value] += answered
            if backend.kind is Kind.LEGACY:
                configured_legacy += weight
            backends.append(
                {
                    "name": backend.name,
                    "kind": backend.kind.value,
                    "weight": weight * 100 / WEIGHT_SCALE,
                    "requests": answered,
                }
            )
        for kind, count in observed.items():
            total[kind] += count
        fully_new += configured_legacy == 0
        requests = observed["legacy"] + observed["new"]
        last = seen.legacy_last.get(route.name)
        routes.append(
            {
                "name": route.name,
                "path": route.pattern.text,
                "backends": backends,
                "configured_legacy_share": configured_legacy / WEIGHT_SCALE,
                "requests": {**observed, "total": requests},
                "observed_legacy_share": _share(observed["legacy"], requests),
                "legacy_last_request_at": _iso(last),
                "seconds_since_legacy_request": None if last is None else round(now - last, 3),
            }
        )
    requests = total["legacy"] + total["new"]
    return {
        "version": table.version,
        "generated_at": _iso(now),
        "routes": routes,
        "totals": {
            "requests": {**total, "total": requests},
            "observed_legacy_share": _share(total["legacy"], requests),
            "routes": len(routes),
            "routes_fully_new": fully_new,
        },
    }


def describe_age(seconds: float | None) -> str:
    """How long ago, for people: "12 s ago", "3.5 min ago", or "not since start"."""
    if seconds is None:
        return "not since start"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"
