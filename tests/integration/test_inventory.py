"""The inventory over real processes (docs/inventory.md): `strangler serve` in front of a
raw-socket monolith, `GET /inventory` with and without samples, `--workers 2` merged by the
gateway, two replicas merged by `strangler inventory`, and `--record` giving route tests that
`strangler check` accepts and fixtures with nothing secret in them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Exchange, RawUpstream, response, serve_process, wait_for

pytestmark = pytest.mark.sockets

STRANGLER = [sys.executable, "-m", "proxy"]


async def monolith(exchange: Exchange) -> None:
    target = exchange.request.target
    if target.startswith("/broken"):
        await exchange.send(response("500 Internal Server Error", body=b"oops"))
        return
    body = json.dumps({"path": target, "session": "s3cret-session-value"}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "session_id=s3cret-cookie"),
        ("Content-Length", str(len(body))),
    ]
    await exchange.send(response(headers=headers, body=body))


@dataclass
class Setup:
    table: Path
    upstream: RawUpstream


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    upstream = RawUpstream(monolith).start()
    table = tmp_path / "routes.yaml"
    table.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{upstream.url}', kind: legacy}}\n"
        "  fn: {function: 'tests.functions:plain_dict'}\n"
        "routes:\n"
        "  - {name: everything-else, match: {path: /}, backend: monolith}\n"
        "  - {name: migrated, match: {path: /new}, backend: fn}\n"
    )
    yield Setup(table, upstream)
    upstream.stop()


def traffic(gateway: str) -> None:
    secret = {"Cookie": "session_id=s3cret-cookie", "Authorization": "Bearer s3cret-token"}
    for number in range(1, 6):
        httpx.get(f"{gateway}/orders/{number}", headers=secret, timeout=10)
    httpx.get(f"{gateway}/orders/7/items/3f2b8a9e-1c4d-4e5f-9a8b-7c6d5e4f3a2b", timeout=10)
    httpx.post(f"{gateway}/orders", json={"password": "s3cret-password", "n": 1}, timeout=10)
    httpx.get(f"{gateway}/broken/1", timeout=10)
    httpx.get(f"{gateway}/new/1", timeout=10)  # a new backend: not in the inventory


def summary(report: dict[str, object]) -> list[tuple[str, str, str, int, int]]:
    (backend,) = report["backends"]  # type: ignore[index]
    return [
        (t["method"], t["template"], t["route"], t["requests"], t["errors"])
        for t in backend["templates"]  # type: ignore[index]
    ]


EXPECTED = [
    ("GET", "/orders/{id}", "everything-else", 5, 0),
    ("GET", "/broken/{id}", "everything-else", 1, 1),
    ("GET", "/orders/{id}/items/{id}", "everything-else", 1, 0),
    ("POST", "/orders", "everything-else", 1, 0),
]


def test_the_inventory_counts_what_the_legacy_backend_serves_by_template(setup: Setup) -> None:
    process, gateway, admin = serve_process(setup.table, "--access-log", "off")
    try:
        traffic(gateway)
        report = httpx.get(f"{admin}/inventory", timeout=10).json()
        assert summary(report) == EXPECTED
        (backend,) = report["backends"]
        assert backend["backend"] == "monolith"
        assert backend["other"] == {"requests": 0, "errors": 0}
        first = backend["templates"][0]
        assert "1970-01-01T00:00:00Z" < first["first_seen"] <= first["last_seen"]
        assert "samples" not in first
        sampled = httpx.get(f"{admin}/inventory", params={"samples": "1"}, timeout=10).json()
        samples = sampled["backends"][0]["templates"][0]["samples"]
        assert [s["request"]["path"] for s in samples] == ["/orders/1", "/orders/2", "/orders/3"]
        assert dict(map(tuple, samples[0]["request"]["headers"]))["cookie"] == "REDACTED"
        assert samples[0]["response"]["body"] == {
            "json": {"path": "/orders/1", "session": "REDACTED"}
        }
        assert "s3cret" not in json.dumps(sampled)
        page = httpx.get(f"{admin}/", timeout=10).text
        assert "<h2>Left on the monolith</h2>" in page
        assert "GET /orders/{id}</code>" in page
    finally:
        process.stop()


def test_workers_are_merged_by_the_gateway(setup: Setup) -> None:
    process, gateway, admin = serve_process(setup.table, "--access-log", "off", "--workers", "2")
    try:
        traffic(gateway)

        # Each worker writes its inventory every second; whichever answers merges them all.
        def merged() -> bool:
            return all(
                summary(httpx.get(f"{admin}/inventory", timeout=10).json()) == EXPECTED
                for _ in range(6)
            )

        assert wait_for(merged, timeout=10), summary(httpx.get(f"{admin}/inventory").json())
    finally:
        process.stop()


def test_strangler_inventory_merges_replicas_suggests_routes_and_records_fixtures(
    setup: Setup, tmp_path: Path
) -> None:
    replicas = [serve_process(setup.table, "--access-log", "off") for _ in range(2)]
    try:
        for _, gateway, _ in replicas:
            traffic(gateway)
        admins = [arg for _, _, admin in replicas for arg in ("--admin", admin)]

        def inventory(*flags: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*STRANGLER, "inventory", *admins, *flags],
                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        table = inventory()
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == "left on monolith: 4 endpoints, 16 requests"
        assert lines[2].split() == [
            "GET", "/orders/{id}", "everything-else", "10", "0", lines[2].split()[-1],
        ]  # fmt: skip
        suggested = inventory("--suggest")
        assert '    match: { path: "/orders/{id}/items/{id2}", methods: [GET] }' in (
            suggested.stdout
        )
        # Pasted under a table's routes, the suggestions load.
        pasted = tmp_path / "suggested.yaml"
        pasted.write_text(
            setup.table.read_text().split("routes:")[0] + "routes:\n" + suggested.stdout
        )
        checked = subprocess.run(
            [*STRANGLER, "check", "-c", str(pasted)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
        recorded = inventory("--record", str(tmp_path / "recorded"))
        assert recorded.stdout.startswith("9 samples written")  # 3 + 2 + 2 + 2: two replicas
        cases = tmp_path / "recorded" / "routes.tests.yaml"
        check = subprocess.run(
            [*STRANGLER, "check", "-c", str(setup.table), "--tests", str(cases)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "9 route tests passed" in check.stdout
        fixtures = sorted((tmp_path / "recorded" / "fixtures").glob("*.json"))
        assert len(fixtures) == 9
        everything = "".join(f.read_text() for f in fixtures)
        assert "s3cret" not in everything
        posted = json.loads(
            (tmp_path / "recorded" / "fixtures" / "monolith-post-orders-1.json").read_text()
        )
        assert posted["request"]["body"] == {"json": {"password": "REDACTED", "n": 1}}
    finally:
        for process, _, _ in replicas:
            process.stop()


def test_inventory_off_keeps_nothing(setup: Setup) -> None:
    process, gateway, admin = serve_process(
        setup.table, "--access-log", "off", "--inventory", "off"
    )
    try:
        traffic(gateway)
        assert httpx.get(f"{admin}/inventory", timeout=10).json() == {
            "backends": [], "enabled": False,
        }  # fmt: skip
    finally:
        process.stop()


def test_the_catalog_function_answers_the_recorded_requests_as_the_monolith_did(
    monolith: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's loop (docs/inventory.md): record the monolith through the gateway, then
    replay every fixture against the function that replaces it."""
    from new_services.catalog import handler as catalog
    from tests.replay import answered_alike, event_from, fixtures

    table = tmp_path / "routes.yaml"
    table.write_text(
        "version: 1\nbackends:\n"
        f"  monolith: {{url: '{monolith}', kind: legacy}}\n"
        "routes:\n"
        "  - {name: catalog, match: {path: /products}, backend: monolith}\n"
    )
    process, gateway, admin = serve_process(table, "--access-log", "off")
    try:
        for target in ("/products/7", "/products/999", "/products?category=books&per_page=3"):
            assert httpx.get(f"{gateway}{target}", timeout=10).status_code in (200, 404)
        recorded = subprocess.run(
            [*STRANGLER, "inventory", "--admin", admin, "--record", str(tmp_path / "rec")],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert recorded.stdout.startswith("3 samples written"), recorded.stderr
    finally:
        process.stop()
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(catalog.handler, "_service", None)
    replayed = fixtures(tmp_path / "rec" / "fixtures")
    assert len(replayed) == 3
    for fixture in replayed:
        result = catalog.handler(event_from(fixture), None)
        assert answered_alike(fixture, result) == [], fixture["request"]["path"]
    # The catalogue's next version differs in one field on purpose: the replay says so.
    from new_services.catalog import next as catalog_next

    found = [answered_alike(f, catalog_next.handler(event_from(f), None)) for f in replayed]
    assert sorted(map(len, found)) == [0, 1, 1]  # the 404 is alike; list and detail are not
    assert {d for ds in found for d in ds} == {"the JSON body differs"}
