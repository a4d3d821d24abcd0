"""The command line as users run it: real subprocesses, real ports, real signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    DemoPorts,
    Process,
    demo_process,
    serve_process,
    shipped_table,
    wait_for,
)

pytestmark = pytest.mark.sockets

ROOT = Path(__file__).resolve().parents[2]
STRANGLER = [sys.executable, "-m", "proxy"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRANGLER, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def table(tmp_path: Path, monolith_url: str, routes: str | None = None) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            backends:
              monolith: {{url: "{monolith_url}", kind: legacy}}
            routes:
            """
        )
        + (routes or "  - {name: shop, match: {path: /products}, backend: monolith}\n")
    )
    return path


# ---- check -------------------------------------------------------------------------------------


def test_check_accepts_the_shipped_tables() -> None:
    for name in ("config/routes.yaml", "config/routes.example.yaml"):
        result = run("check", "-c", name)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.fullmatch(
            rf"{re.escape(name)}: ok \(\d+ routes?, \d+ backends?, version [0-9a-f]{{16}}\)\n",
            result.stdout,
        )


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "backends:\n"
        "  m: {url: 'http://h', timeout: 30}\n"
        "routes:\n"
        "  - {name: a, match: {path: /}, backend: n}\n"
    )
    result = run("check", "-c", str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad}:3:33: backends.m.timeout: expected a duration with a unit ('250ms', '3s', '1m', "
        "or 0), got an integer",
        f"{bad}:5:42: routes[0] (a).backend: unknown backend 'n' (known: m)",
        f"{bad}: invalid (2 problems)",
    ]


def test_check_imports_function_handlers_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "my_service.py").write_text("def handler(event, context):\n    return 'hi'\n")
    path = tmp_path / "fn.yaml"
    path.write_text(
        "version: 1\nbackends:\n"
        "  good: {function: 'my_service:handler'}\n"
        "  missing: {function: 'my_service:nope'}\n"
        "  broken: {function: 'no_such_module:handler'}\n"
        "routes: [{name: a, match: {path: /}, split: {good: 50, missing: 25, broken: 25}}]\n"
    )
    strangler = str(Path(sys.executable).parent / "strangler")
    result = subprocess.run(
        [strangler, "check", "-c", "fn.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "fn.yaml:4:12: backends.missing: 'my_service' has no attribute 'nope'",
        "fn.yaml:5:11: backends.broken: cannot import 'no_such_module': ModuleNotFoundError: "
        "No module named 'no_such_module'",
        "fn.yaml: invalid (2 problems)",
    ]


def test_strangler_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "strangler"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert re.fullmatch(r"strangler \d+\.\d+\.\d+\n", result.stdout)


# ---- explain -----------------------------------------------------------------------------------


def example_line(route: str) -> int:
    """Where a route starts in config/routes.example.yaml (its "- name:" line)."""
    lines = (ROOT / "config" / "routes.example.yaml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip() == f"- name: {route}")


def test_explain_names_the_route_the_backend_and_the_losers() -> None:
    result = run("explain", "-c", "config/routes.example.yaml", "GET", "/products/7/../featured")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    detail_line = example_line("product-detail")
    assert lines[:5] == [
        "request   GET /products/7/../featured",
        "path      /products/featured   (normalised; this is what the backend receives)",
        f"route     product-detail   (config/routes.example.yaml:{detail_line}:5)",
        "match     path /products/{id}",
        "captures  id=featured",
    ]
    assert "backend   catalog (new) 100%" in lines
    assert lines[-8:] == [
        "   1. orders-v1        /api/v1/orders/{id}  no: path does not match",
        "   2. shop-catalog     /shop/catalog        no: path does not match",
        "   3. order-events     /orders/events       no: path does not match",
        "   4. product-detail   /products/{id}       chosen",
        "   5. partner-api      /api                 no: path does not match",
        "   6. catalog          /products            no: matches, but a more specific route "
        "comes first",
        "   7. account          /account             no: path does not match",
        "   8. everything-else  /                    no: matches, but a more specific route "
        "comes first",
    ]


def test_explain_shows_the_rewritten_path() -> None:
    result = run("explain", "-c", "config/routes.example.yaml", "GET", "/shop/catalog/7?x=1")
    assert result.returncode == 0, result.stderr
    assert (
        "rewrite   /v2/items/7   (what url backends receive; X-Forwarded-Prefix: /shop/catalog)"
        in result.stdout.splitlines()
    )
    result = run("explain", "-c", "config/routes.example.yaml", "GET", "/api/v1/orders/42")
    assert "rewrite   /orders/42   (what url backends receive)" in result.stdout.splitlines()


def test_explain_shows_splits_hosts_and_headers() -> None:
    result = run(
        "explain",
        "-c",
        "config/routes.example.yaml",
        "GET",
        "http://shop.partners.example.com:8443/api/orders",
        "-H",
        "X-Api-Version: 2",
    )
    assert result.returncode == 0
    line = example_line("partner-api")
    assert f"route     partner-api   (config/routes.example.yaml:{line}:5)" in result.stdout
    assert (
        "match     path /api (prefix); host *.partners.example.com; header x-api-version: 2"
        in result.stdout
    )
    result = run("explain", "-c", "config/routes.example.yaml", "HEAD", "/products?page=2")
    assert "backend   catalog (new) 25%\nbackend   monolith (legacy) 75%\n" in result.stdout
    assert "sticky    on cookie session_id: no key; the backend is picked at random by weight" in (
        result.stdout
    )
    keyed = run(
        "explain",
        "-c",
        "config/routes.example.yaml",
        "GET",
        "/products",
        "-H",
        "Cookie: theme=dark; session_id=u-42",
    )
    assert re.search(
        r"sticky    on cookie session_id: key 'u-42' lands on (catalog|monolith)\n", keyed.stdout
    )


def test_explain_exits_1_when_nothing_matches_or_the_path_is_refused(tmp_path: Path) -> None:
    path = table(tmp_path, "http://127.0.0.1:1")
    result = run("explain", "-c", str(path), "GET", "/other")
    assert result.returncode == 1
    assert "route     none: the gateway answers 404 no_route" in result.stdout
    result = run("explain", "-c", str(path), "GET", "/a%2Fb")
    assert result.returncode == 1
    assert (
        "refused   400 bad_request: bad path: encoded '/' or '\\' in the path is not allowed"
        in (result.stdout)
    )


# ---- serve -------------------------------------------------------------------------------------


def serve(config: Path, *extra: str) -> tuple[Process, str, str]:
    return serve_process(config, *extra)


def test_serve_proxies_to_the_monolith_and_stops_on_sigterm(tmp_path: Path, monolith: str) -> None:
    process, gateway, admin = serve(table(tmp_path, monolith))
    try:
        direct = httpx.get(f"{monolith}/products/3")
        through = httpx.get(f"{gateway}/products/3")
        assert through.status_code == 200
        assert through.content == direct.content
        assert through.headers["etag"] == direct.headers["etag"]
        # The admin endpoints live on the admin port only.
        assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{admin}/readyz").json()
        assert ready["status"] == "ready"
        routes = httpx.get(f"{admin}/routes").json()
        assert [r["name"] for r in routes["routes"]] == ["shop"]
        assert ready["version"] == routes["version"]
        public = httpx.get(f"{gateway}/healthz")
        assert public.status_code == 404
        assert public.json()["error"] == "no_route"
    finally:
        assert process.stop(signal.SIGTERM) == 0


def test_serve_binds_the_admin_port_to_loopback_by_default(tmp_path: Path, monolith: str) -> None:
    process = Process(
        [
            *STRANGLER,
            "serve",
            "-c",
            str(table(tmp_path, monolith)),
            "--port",
            "0",
            "--admin-port",
            "0",
        ]
    )
    try:
        assert (
            process.wait_for_line(r"gateway\s+(http://\S+)").group(1).startswith("http://0.0.0.0:")
        )
        assert (
            process.wait_for_line(r"admin\s+(http://\S+)").group(1).startswith("http://127.0.0.1:")
        )
    finally:
        assert process.stop(signal.SIGINT) == 0


def test_serve_refuses_an_invalid_table_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nbackends: {}\nroutes: []\n")
    result = run("serve", "-c", str(bad), "--port", "0", "--admin-port", "0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:2:11: backends: at least one backend is required",
        f"{bad}:3:9: routes: at least one route is required",
        f"strangler: {bad}: not loaded (2 problems)",
    ]


def test_serve_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            "-c",
            str(table(tmp_path, "http://127.0.0.1:1")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            "0",
        )
    assert result.returncode == 1
    assert "strangler: cannot listen:" in result.stderr
    assert "Address already in use" in result.stderr


def test_settings_come_from_the_environment(tmp_path: Path, monolith: str) -> None:
    config = table(tmp_path, monolith)
    env = {
        **os.environ,
        "STRANGLER_CONFIG": str(config),
        "STRANGLER_HOST": "127.0.0.1",
        "STRANGLER_PORT": "0",
        "STRANGLER_ADMIN_PORT": "0",
        "STRANGLER_SHUTDOWN_GRACE": "0",
        "PYTHONUNBUFFERED": "1",
    }
    process = Process([*STRANGLER, "serve"], cwd=tmp_path, env=env)
    try:
        line = process.wait_for_line(r"table (\S+) \(version")
        assert line.group(1) == str(config)
        gateway = process.wait_for_line(r"gateway\s+(http://\S+)").group(1)
        assert httpx.get(f"{gateway}/products?per_page=1").json()["per_page"] == 1
    finally:
        assert process.stop() == 0


# ---- demo --------------------------------------------------------------------------------------


def test_demo_serves_the_migration_in_progress_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = DemoPorts.free()
    process, gateway, admin = demo_process(shipped_table(tmp_path, ports), ports, tmp_path / "data")
    try:
        routes = {r["name"]: r for r in httpx.get(f"{admin}/routes").json()["routes"]}
        assert routes["auth"]["backends"] == [{"name": "auth", "kind": "new", "weight": 100.0}]
        assert [b["weight"] for b in routes["catalog"]["backends"]] == [25.0, 75.0]
        # Login is served by the auth function...
        login = httpx.post(
            f"{gateway}/auth/login", json={"username": "alice", "password": "alice-password"}
        )
        assert login.status_code == 200
        assert len(login.headers.get_list("set-cookie")) == 2
        cookies = {"session_id": login.cookies["session_id"]}
        assert httpx.get(f"{gateway}/auth/me", cookies=cookies).json()["user"]["id"] == 1
        # ...and its session opens the cart, still on the monolith.
        added = httpx.post(f"{gateway}/cart/items", json={"product_id": 3}, cookies=cookies)
        assert added.status_code == 201
        # The catalogue answers the same whichever side of the split serves it.
        pages = {httpx.get(f"{gateway}/products?per_page=3").content for _ in range(20)}
        assert len(pages) == 1
        # ...and its next version, shadowed, differs in one field: the demo's mismatch.
        (shadowed,) = httpx.get(f"{admin}/shadow").json()["routes"]
        assert (shadowed["route"], shadowed["backend"]) == ("catalog", "catalog-next")
        assert wait_for(lambda: httpx.get(f"{admin}/shadow").json()["routes"][0]["mismatches"])
        mismatch = httpx.get(f"{admin}/shadow").json()["routes"][0]["mismatches"][0]
        first = mismatch["differences"][0]
        assert first["path"] == "$.items[0].category"
        assert first["shadow"] == first["primary"].title() != first["primary"]
        status = run("status", "--admin", admin)
        assert "shadowed route" in status.stdout
        assert re.search(r"^catalog\s+catalog-next 100%\s+0\.0%", status.stdout, re.M)
        page = httpx.get(f"{gateway}/")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>Shop</h1>" in page.text
    finally:
        assert process.stop(signal.SIGINT) == 0
    assert wait_for(lambda: process.proc.poll() is not None)


def test_demo_serves_reviews_from_the_reviews_service_under_its_own_paths(tmp_path: Path) -> None:
    """The demo's rewrite: the reviews service knows only /reviews/by-product/{id}; clients
    keep the monolith's /products/{id}/reviews and get the monolith's bytes."""
    ports = DemoPorts.free()
    process, gateway, admin = demo_process(shipped_table(tmp_path, ports), ports, tmp_path / "data")
    try:
        monolith = process.wait_for_line(r"monolith\s+(http://\S+)").group(1)
        reviews = process.wait_for_line(r"reviews\s+(http://\S+)").group(1)
        assert reviews == f"http://127.0.0.1:{ports.reviews}"
        ids = [str(pid) for pid in range(0, 32)] + ["07", "x"]
        for pid in ids:
            through = httpx.get(f"{gateway}/products/{pid}/reviews?sort=newest")
            legacy = httpx.get(f"{monolith}/products/{pid}/reviews?sort=newest")
            direct = httpx.get(f"{reviews}/reviews/by-product/{pid}")
            assert (through.status_code, through.content) == (legacy.status_code, legacy.content)
            assert (direct.status_code, direct.content) == (legacy.status_code, legacy.content)
            assert through.headers["content-type"] == legacy.headers["content-type"]
        assert httpx.get(f"{gateway}/products/7/reviews").json()["count"] == 3
        # The service has its own layout: without the rewrite the monolith's path is unknown.
        assert httpx.get(f"{reviews}/products/7/reviews").status_code == 404
        served = route_counts(admin, "reviews")
        assert served == {("reviews", "200"): 32.0, ("reviews", "404"): 3.0}
    finally:
        assert process.stop(signal.SIGINT) == 0


def test_demo_users_keep_their_identity_on_both_sides_of_a_split_cart(tmp_path: Path) -> None:
    """The shipped table with the cart at 50/50: the monolith's /session/whoami says who a
    session is, for the monolith and for the cart function alike (docs/authorizers.md)."""
    ports = DemoPorts.free()
    config = shipped_table(tmp_path, ports)
    config.write_text(
        config.read_text().replace(
            "split: { cart: 0, monolith: 100 }", "split: { cart: 50, monolith: 50 }"
        )
    )
    process, gateway, admin = demo_process(config, ports, tmp_path / "data")
    try:
        sessions = {}
        for user in ("alice", "bob"):
            login = httpx.post(
                f"{gateway}/auth/login", json={"username": user, "password": f"{user}-password"}
            )
            assert login.status_code == 200
            sessions[user] = {"session_id": login.cookies["session_id"]}
        # Alice puts 24 items in her cart, one request at a time; each lands on either side.
        for _ in range(24):
            added = httpx.post(
                f"{gateway}/cart/items", json={"product_id": 3}, cookies=sessions["alice"]
            )
            assert added.status_code == 201, added.text
        served = route_counts(admin, "cart")
        assert served[("cart", "201")] > 0
        assert served[("monolith", "201")] > 0
        # Each side holds what it was given, for Alice: together, all 24.
        # (The monolith's answers carry its server's header; the function's do not.)
        quantities: dict[str, set[int]] = {"monolith": set(), "cart": set()}
        for _ in range(24):
            reply = httpx.get(f"{gateway}/cart", cookies=sessions["alice"])
            (line,) = reply.json()["items"]
            assert line["product_id"] == 3
            side = "monolith" if reply.headers.get("server") == "uvicorn" else "cart"
            quantities[side].add(line["quantity"])
        assert [len(seen) for seen in quantities.values()] == [1, 1]
        assert sum(seen.pop() for seen in quantities.values()) == 24
        # Bob's cart is empty on both sides, and without a session each side says so itself.
        for _ in range(12):
            assert httpx.get(f"{gateway}/cart", cookies=sessions["bob"]).json()["items"] == []
            anonymous = httpx.get(f"{gateway}/cart")
            assert (anonymous.status_code, anonymous.json()["error"]) == (401, "not_logged_in")
        text = httpx.get(f"{admin}/metrics").text
        results = {
            sample.labels["result"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "strangler_authorizer_requests_total"
        }
        # One call per session (the TTL is 30s); the rest from the cache; 12 without a session.
        assert results == {
            "allow": 2.0, "cached": 58.0, "deny": 0.0, "error": 0.0, "unauthenticated": 12.0,
        }  # fmt: skip
    finally:
        assert process.stop(signal.SIGINT) == 0


def test_demo_inventory_shows_what_the_monolith_still_serves(tmp_path: Path) -> None:
    """After a few requests through `strangler demo`, `strangler inventory` lists the monolith's
    endpoints by template, and its suggestion for the cart is the shipped table's cart route."""
    ports = DemoPorts.free()
    process, gateway, admin = demo_process(shipped_table(tmp_path, ports), ports, tmp_path / "data")
    try:
        login = httpx.post(
            f"{gateway}/auth/login", json={"username": "bob", "password": "bob-password"}
        )
        cookies = {"session_id": login.cookies["session_id"]}
        for path in ("/cart", "/orders", "/orders/1001", "/", "/products/3/image"):
            httpx.get(f"{gateway}{path}", cookies=cookies)
        httpx.post(f"{gateway}/cart/items", json={"product_id": 3}, cookies=cookies)
        shown = run("inventory", "--admin", admin)
        assert shown.returncode == 0, shown.stderr
        endpoints = {tuple(line.split()[:3]) for line in shown.stdout.splitlines()[2:]}
        assert {
            ("GET", "/cart", "cart"),
            ("POST", "/cart/items", "cart"),
            ("GET", "/orders", "orders"),
            ("GET", "/orders/{id}", "orders"),
            ("GET", "/", "everything-else"),
            ("GET", "/products/{id}/image", "catalog"),  # the function's 404 fell through
        } <= endpoints
        suggested = run("inventory", "--admin", admin, "--suggest").stdout
        entry = suggested.split("  - name: cart\n", 1)[1].split("\n\n", 1)[0]
        assert entry.startswith(
            '    match: { path: "/cart", methods: [GET] }\n    backend: monolith'
        )
        shipped = yaml.safe_load((ROOT / "config" / "routes.yaml").read_text())
        (cart,) = [r for r in shipped["routes"] if r["name"] == "cart"]
        assert cart["match"] == {"path": "/cart"}
    finally:
        assert process.stop(signal.SIGINT) == 0


def route_counts(admin: str, route: str) -> dict[tuple[str, str], float]:
    """``strangler_requests_total`` of one route, by backend and status code."""
    text = httpx.get(f"{admin}/metrics").text
    return {
        (sample.labels["backend"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "strangler_requests_total" and sample.labels["route"] == route
    }


# ---- status ------------------------------------------------------------------------------------


def test_status_prints_the_migration_of_a_running_gateway(tmp_path: Path, monolith: str) -> None:
    process, gateway, admin = serve(table(tmp_path, monolith))
    try:
        for _ in range(3):
            httpx.get(f"{gateway}/products?per_page=1")
        result = run("status", "--admin", admin)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == [
            "route",
            "backends",
            "configured",
            "observed",
            "requests",
            "monolith",
            "last",
            "served",
        ]
        assert lines[1].startswith("shop   monolith 100%  ████████████████████ 100.0% legacy")
        served, ago, unit, word = lines[1].split()[-4:]
        # Requests: 3, served moments ago (the status command itself takes a while to start).
        assert (served, unit, word) == ("3", "s", "ago")
        assert 0 <= int(ago) <= 5
        assert lines[-2].startswith("overall   ████████████████████ 100.0% legacy of 3 requests")
        assert lines[-1].startswith("routes    0 of 1 configured fully on new services")
    finally:
        assert process.stop() == 0
    unreachable = run("status", "--admin", admin)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"strangler status: cannot read {admin}/migration:")


# ---- route tests -------------------------------------------------------------------------------


def test_check_runs_the_shipped_route_tests() -> None:
    result = run("check", "-c", "config/routes.yaml", "--tests", "config/routes.tests.yaml")
    assert result.returncode == 0, result.stdout
    assert re.search(r"config/routes.tests.yaml: \d+ route tests passed\n\Z", result.stdout)


def test_route_tests_report_each_failure_with_its_location(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- request: {method: GET, path: /auth/me}\n"
        "  expect: {route: everything-else, backend: monolith}\n"
        "- request: {method: GET, path: /auth/me}\n"
        "  expect: {route: catalog}\n"
        "- request: {method: GET, path: /products, headers: {Cookie: 'session_id=u-42'}}\n"
        "  expect: {route: catalog, backend: catalog}\n"
        "- request: {method: GET, path: /products}\n"
        "  expect: {backend: monolith}\n"
        "- request: {method: GET, path: '/x%2Fy'}\n"
        "  expect: {route: none}\n"
        "- request: {method: GET, path: '/api/v1/orders/42?x=1'}\n"
        "  expect: {route: orders-v1, path: /orders/42}\n"
        "- request: {method: GET, path: '/shop/catalog/./7'}\n"
        "  expect: {path: /shop/catalog/7}\n"
    )
    result = run("check", "-c", "config/routes.example.yaml", "--tests", str(cases))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[1] == (
        f"{cases}:3:3: case 2 (GET /auth/me): expected route catalog, got everything-else"
    )
    # u-42 lands on the monolith at 25% (see explain), so this expectation is wrong too.
    assert lines[2] == (
        f"{cases}:5:3: case 3 (GET /products): expected backend catalog, got monolith"
    )
    assert lines[3] == (
        f"{cases}:7:3: case 4 (GET /products): expected backend monolith, got one of catalog, "
        "monolith at random (send the sticky key to pin it)"
    )
    # The rewritten path is what a url backend gets: the second path case expected the
    # client's.
    assert lines[4] == (
        f"{cases}:13:3: case 7 (GET /shop/catalog/./7): expected path /shop/catalog/7, "
        "got /v2/items/7"
    )
    assert lines[5] == f"{cases}: 4 of 7 route tests failed"
    cases.write_text("- request: {method: GET}\n  expect: {rout: x}\n")
    malformed = run("check", "-c", "config/routes.yaml", "--tests", str(cases))
    assert malformed.returncode == 1
    assert malformed.stdout.splitlines()[1:] == [
        f"{cases}:1:3: tests[0].request: missing required key 'path'",
        f"{cases}:2:12: tests[0].expect: unknown key 'rout' "
        "(allowed: authorizer, backend, path, route)",
        f"{cases}: not a valid route test file (2 problems)",
    ]


def test_a_route_test_file_is_read_as_the_table_is(tmp_path: Path) -> None:
    # The table's own YAML reader: a control character is a located problem, not a crash, and
    # the size limit holds.
    cases = tmp_path / "cases.yaml"
    cases.write_bytes(b"- request: {method: GET, path: '/a\x01'}\n  expect: {route: none}\n")
    result = run("check", "-c", "config/routes.yaml", "--tests", str(cases))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"{cases}:1:35: invalid YAML: unacceptable character #x0001: special characters are "
        "not allowed",
        f"{cases}: not a valid route test file (1 problems)",
    ]
    cases.write_bytes(b"#" * (1024 * 1024 + 1))
    result = run("check", "-c", "config/routes.yaml", "--tests", str(cases))
    assert result.returncode == 1
    assert result.stdout.splitlines()[1:] == [
        f"{cases}:1:1: file is larger than 1048576 bytes",
        f"{cases}: not a valid route test file (1 problems)",
    ]


def test_a_refused_request_expects_route_and_backend_none(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- request: {method: GET, path: '/x%2Fy'}\n"
        "  expect: {route: none, backend: none}\n"
        "- request: {method: GET, path: /, host: 'a b'}\n"
        "  expect: {route: none, backend: none}\n"
        "- request: {method: GET, path: '/x%2Fy'}\n"
        "  expect: {route: everything-else}\n"
    )
    result = run("check", "-c", "config/routes.example.yaml", "--tests", str(cases))
    assert result.returncode == 1
    assert result.stdout.splitlines()[1:] == [
        f"{cases}:5:3: case 3 (GET /x%2Fy): expected route everything-else, got none "
        "(400: bad path: encoded '/' or '\\' in the path is not allowed)",
        f"{cases}: 1 of 3 route tests failed",
    ]
