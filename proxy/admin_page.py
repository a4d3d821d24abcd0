"""The admin page: the migration report as HTML a person reads at a glance.

Server-rendered, no script: per route a bar of legacy vs new as configured and as observed, and
how long ago the monolith last served it; overall progress on top; the rollouts, shadows and
circuit breakers below. It refreshes itself.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from proxy.migration import describe_age

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
.meta { color: #5b6475; margin-bottom: 1.5rem; }
table { border-collapse: collapse; width: 100%; max-width: 72rem; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #e3e6ec;
         vertical-align: middle; }
th { font-weight: 600; color: #5b6475; font-size: .85rem; }
.bar { display: flex; width: 16rem; height: 1.1rem; border-radius: 3px; overflow: hidden;
       background: #eef0f4; }
.bar span { display: block; height: 100%; }
.legacy { background: #c2410c; }
.new { background: #15803d; }
.circuit-closed { color: #15803d; } .circuit-open { color: #b91c1c; font-weight: 600; }
.circuit-half_open { color: #b45309; }
.label { font-size: .8rem; color: #5b6475; }
.progress .bar { width: 32rem; height: 1.6rem; }
.none { color: #8a93a5; font-style: italic; }
.error { background: #fef2f2; border: 1px solid #fca5a5; padding: .6rem .9rem; margin: 0 0 1rem;
         max-width: 70rem; }
"""


def _percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def _bar(route: str, which: str, legacy: float | None) -> str:
    if legacy is None:
        return f'<div class="none" data-route="{route}" data-which="{which}">no traffic yet</div>'
    new = 1 - legacy
    return (
        f'<div class="bar" data-route="{route}" data-which="{which}">'
        f'<span class="legacy" style="width:{legacy * 100:.4f}%" data-share="{legacy}"></span>'
        f'<span class="new" style="width:{new * 100:.4f}%" data-share="{new}"></span></div>'
        f'<div class="label">legacy {_percent(legacy)} · new {_percent(new)}</div>'
    )


def _since(seconds: float | None) -> str:
    text = escape(describe_age(seconds))
    return f'<span class="none">{text}</span>' if seconds is None else text


def _error_block(error: dict[str, Any] | None) -> str:
    if error is None:
        return ""
    items = "".join(
        f"<li><code>{escape(e['file'])}:{e['line']}:{e['column']}</code> "
        f"{escape(e['message'])}</li>"
        for e in error["errors"]
    )
    return (
        f'<div class="error" id="last-error"><strong>The last routing table was rejected</strong> '
        f"({escape(error['trigger'])}, {escape(error['at'])}); the version below keeps serving."
        f"<ul>{items}</ul></div>"
    )


def _circuits_block(circuits: dict[str, str]) -> str:
    if not circuits:
        return ""
    items = "".join(
        f"<li data-backend='{escape(name)}' data-state='{state}'><code>{escape(name)}</code> "
        f"<span class='circuit-{state}'>{state.replace('_', '-')}</span></li>"
        for name, state in circuits.items()
    )
    return f'<h2>Circuit breakers</h2><ul id="circuits">{items}</ul>'


def _shadow_block(shadows: list[dict[str, Any]]) -> str:
    """Parity per shadowed route, and the latest mismatch's differences."""
    if not shadows:
        return ""
    rows = []
    for entry in shadows:
        route = escape(entry["route"])
        counts = entry["counts"]
        parity = entry["parity"]
        shown = "n/a" if parity is None else f"{parity * 100:.1f}%"
        latest = ""
        if entry["mismatches"]:
            items = "".join(
                f"<li><code>{escape(d['path'])}</code>: {escape(json.dumps(d['primary']))} "
                f"→ {escape(json.dumps(d['shadow']))}</li>"
                for d in entry["mismatches"][0]["differences"][:5]
            )
            latest = (
                f"<div class='label'>latest mismatch, {escape(entry['mismatches'][0]['method'])}"
                f" {escape(entry['mismatches'][0]['path'])}:</div><ul>{items}</ul>"
            )
        rows.append(
            f"<tr data-shadow='{route}'><td><strong>{route}</strong></td>"
            f"<td>{escape(entry['backend'])} ({entry['percent']:g}%)</td>"
            f"<td class='parity'>{shown}</td>"
            f"<td>{counts['match']} match, {counts['mismatch']} mismatch, "
            f"{counts['error']} error, {counts['dropped']} dropped{latest}</td></tr>"
        )
    return (
        "<h2>Shadow parity</h2><table id='shadow'><thead><tr><th>route</th><th>shadow</th>"
        f"<th>parity</th><th>results</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _rollouts_block(rollouts: list[dict[str, Any]]) -> str:
    """Each rollout: its step, since when, and the controller's last decision with its
    reason (docs/rollout.md)."""
    if not rollouts:
        return ""
    rows = []
    for item in rollouts:
        steps = ", ".join(f"{step:g}%" for step in item["steps"])
        last = item["last_decision"]
        said = (
            f"<strong>{escape(last['action'])}</strong> {escape(last['reason'])}"
            f"<div class='label'>{escape(last['at'])}</div>"
            if last
            else "<span class='none'>none yet</span>"
        )
        step = item["step"] + 1 if item["step"] >= 0 else "-"
        rows.append(
            f"<tr data-rollout='{escape(item['route'])}'><td><strong>{escape(item['route'])}"
            f"</strong></td><td>{escape(item['to'])} at {item['weight']:g}%"
            f"<div class='label'>step {step} of {len(item['steps'])}: {steps}</div></td>"
            f"<td>{escape(item['since'] or '-')}</td><td>{said}</td></tr>"
        )
    return (
        "<h2>Rollouts</h2><table id='rollouts'><thead><tr><th>route</th><th>step</th>"
        "<th>since</th><th>last decision</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _inventory_block(backends: list[dict[str, Any]]) -> str:
    """Left on the monolith: each legacy backend's most requested templates (docs/inventory.md)."""
    if not backends:
        return ""
    rows = []
    for backend in backends:
        for item in backend["templates"][:10]:
            rows.append(
                f"<tr data-inventory='{escape(backend['backend'])}'>"
                f"<td>{escape(backend['backend'])}</td><td><code>{escape(item['method'])} "
                f"{escape(item['template'])}</code><div class='label'>route "
                f"{escape(item['route'])}</div></td><td>{item['requests']}</td>"
                f"<td>{item['errors']}</td><td>{escape(item['last_seen'])}</td></tr>"
            )
        other = backend["other"]["requests"]
        more = len(backend["templates"]) - 10
        if other or more > 0:
            rows.append(
                f"<tr><td>{escape(backend['backend'])}</td><td class='none'>"
                f"{max(more, 0)} more templates; {other} requests past the cap</td>"
                "<td></td><td></td><td></td></tr>"
            )
    return (
        "<h2>Left on the monolith</h2><table id='inventory'><thead><tr><th>backend</th>"
        "<th>endpoint</th><th>requests</th><th>errors</th><th>last seen</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def render_page(
    report: dict[str, Any],
    last_error: dict[str, Any] | None = None,
    circuits: dict[str, str] | None = None,
    shadows: list[dict[str, Any]] | None = None,
    rollouts: list[dict[str, Any]] | None = None,
    inventory: list[dict[str, Any]] | None = None,
) -> str:
    totals = report["totals"]
    rows = []
    for route in report["routes"]:
        name = escape(route["name"])
        backends = ", ".join(
            f"{escape(b['name'])} ({b['kind']}, {b['weight']:g}%)" for b in route["backends"]
        )
        rows.append(
            f"<tr><td><strong>{name}</strong><div class='label'>{escape(route['path'])}</div></td>"
            f"<td>{backends}</td>"
            f"<td>{_bar(name, 'configured', route['configured_legacy_share'])}</td>"
            f"<td>{_bar(name, 'observed', route['observed_legacy_share'])}"
            f"<div class='label'>{route['requests']['total']} requests</div></td>"
            f"<td data-route='{name}' data-which='since'>"
            f"{_since(route['seconds_since_legacy_request'])}</td></tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>strangler: migration progress</title><style>{_STYLE}</style></head>
<body>
<h1>Migration progress</h1>
{_error_block(last_error)}
<div class="meta">table version {escape(report["version"])} · {report["generated_at"]} ·
{totals["routes_fully_new"]} of {totals["routes"]} routes configured fully on new services</div>
<div class="progress"><div class="label">all traffic since start, legacy vs new</div>
{_bar("all", "observed", totals["observed_legacy_share"])}
<div class="label">{totals["requests"]["total"]} requests</div></div>
<h2>Routes</h2>
<table><thead><tr><th>route</th><th>backends</th><th>configured</th><th>observed</th>
<th>monolith last served</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody></table>
{_inventory_block(inventory or [])}
{_rollouts_block(rollouts or [])}
{_shadow_block(shadows or [])}
{_circuits_block(circuits or {})}
</body></html>
"""
