"""``strangler status``: the migration report of a running gateway as a terminal table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from proxy.migration import describe_age

BAR_WIDTH = 20


def fetch_report(admin: str, path: str = "/migration", timeout: float = 5.0) -> dict[str, Any]:
    """GET a report from the admin URL (raises httpx.HTTPError when it cannot)."""
    response = httpx.get(admin.rstrip("/") + path, timeout=timeout, trust_env=False)
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    return report


def bar(legacy: float | None) -> str:
    """Legacy as full blocks, new as light shade, then the legacy percentage."""
    if legacy is None:
        return "no traffic yet".ljust(BAR_WIDTH + 12)
    full = round(legacy * BAR_WIDTH)
    return "█" * full + "░" * (BAR_WIDTH - full) + f" {legacy * 100:5.1f}% legacy"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_shadow(report: dict[str, Any]) -> str:
    """Parity per shadowed route (GET /shadow), or nothing when no route is shadowed."""
    if not report["routes"]:
        return ""
    rows = [("shadowed route", "shadow", "parity", "match", "mismatch", "error", "dropped")]
    for entry in report["routes"]:
        counts, parity = entry["counts"], entry["parity"]
        rows.append(
            (
                entry["route"],
                f"{entry['backend']} {entry['percent']:g}%",
                "n/a" if parity is None else f"{parity * 100:.1f}%",
                *(str(counts[key]) for key in ("match", "mismatch", "error", "dropped")),
            )
        )
    return "\n".join(_table(rows))


def format_report(report: dict[str, Any]) -> str:
    rows = [("route", "backends", "configured", "observed", "requests", "monolith last served")]
    for route in report["routes"]:
        backends = " · ".join(f"{b['name']} {b['weight']:g}%" for b in route["backends"])
        rows.append(
            (
                route["name"],
                backends,
                bar(route["configured_legacy_share"]),
                bar(route["observed_legacy_share"]),
                str(route["requests"]["total"]),
                describe_age(route["seconds_since_legacy_request"]),
            )
        )
    lines = _table(rows)
    totals = report["totals"]
    lines.append("")
    lines.append(
        f"overall   {bar(totals['observed_legacy_share'])} "
        f"of {totals['requests']['total']} requests since start"
    )
    lines.append(
        f"routes    {totals['routes_fully_new']} of {totals['routes']} configured fully "
        f"on new services (table version {report['version']})"
    )
    return "\n".join(lines)
