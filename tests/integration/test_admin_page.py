"""The admin page in a real headless browser (Debian's chromium, driven over WebDriver, the
``webdriver`` fixture of conftest.py): the bars a person reads must show the shares /migration
reports."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import RawUpstream, answer, response, running_gateway

pytestmark = pytest.mark.sockets

BARS = """
return Array.from(document.querySelectorAll('.bar')).map(bar => {
  const whole = bar.getBoundingClientRect();
  const legacy = bar.querySelector('.legacy').getBoundingClientRect();
  return {route: bar.dataset.route, which: bar.dataset.which,
          legacy: legacy.width / whole.width, width: whole.width, height: whole.height,
          label: bar.nextElementSibling.textContent};
});
"""


def test_the_admin_page_shows_the_shares_of_migration(tmp_path: Path, webdriver: str) -> None:
    upstream = RawUpstream(answer(response(body=b"legacy"))).start()
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{upstream.url}', kind: legacy}}\n"
        "  fn: {function: 'tests.functions:plain_dict'}\n"
        "routes:\n"
        "  - {name: old, match: {path: /old}, backend: monolith}\n"
        "  - {name: new, match: {path: /new}, backend: fn}\n"
        "  - {name: ramp, match: {path: /ramp}, split: {fn: 25, monolith: 75},\n"
        "     sticky: {header: X-User}}\n"
        "  - {name: idle, match: {path: /idle}, split: {fn: 60, monolith: 40}}\n"
    )
    try:
        with running_gateway(config) as (_, servers):
            with httpx.Client(base_url=servers.url("gateway")) as client:
                for _ in range(6):
                    client.get("/old")
                for _ in range(2):
                    client.get("/new")
                for user in range(40):
                    client.get("/ramp", headers={"X-User": f"u{user}"})
            admin = servers.url("admin")
            report = httpx.get(f"{admin}/migration").json()
            call(webdriver, "url", {"url": f"{admin}/"})
            bars = call(webdriver, "execute/sync", {"script": BARS, "args": []})
            png = base64.b64decode(httpx.get(f"{webdriver}/screenshot", timeout=30).json()["value"])
            (tmp_path / "admin-page.png").write_bytes(png)
    finally:
        upstream.stop()

    shown = {(bar["route"], bar["which"]): bar for bar in bars}
    expected: dict[tuple[str, str], float] = {
        ("all", "observed"): report["totals"]["observed_legacy_share"],
    }
    for route in report["routes"]:
        expected[(route["name"], "configured")] = route["configured_legacy_share"]
        if route["observed_legacy_share"] is not None:
            expected[(route["name"], "observed")] = route["observed_legacy_share"]
    assert set(shown) == set(expected)
    for key, share in expected.items():
        bar = shown[key]
        # Drawn, and big enough to read.
        assert bar["width"] > 100, key
        assert bar["height"] > 5, key
        assert bar["legacy"] == pytest.approx(share, abs=0.01), key
        assert bar["label"] == f"legacy {share * 100:.4g}% · new {(1 - share) * 100:.4g}%", key
    assert expected[("ramp", "configured")] == 0.75
    assert expected[("old", "observed")] == 1.0
    assert ("idle", "observed") not in shown  # no traffic yet: no bar pretending otherwise
    assert png.startswith(b"\x89PNG")


def call(session: str, command: str, payload: dict[str, Any]) -> Any:
    reply = httpx.post(f"{session}/{command}", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["value"]
