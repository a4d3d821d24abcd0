"""Live reload (docs/reload.md): every trigger applies exactly one reload, a bad table never
replaces a good one, and reloading under load fails no request."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Exchange,
    RawUpstream,
    answer,
    response,
    running_gateway,
    serve_process,
    wait_for,
)

pytestmark = pytest.mark.sockets


def table(name: str, backend: str = "http://127.0.0.1:1", extra: str = "") -> str:
    return (
        "version: 1\nbackends:\n"
        f"  up: {{url: '{backend}'}}\n{extra}"
        "routes:\n"
        f"  - {{name: {name}, match: {{path: /}}, backend: up}}\n"
    )


class Served:
    """A `strangler serve` process and what its admin port says."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.process, self.gateway, self.admin = serve_process(config, *flags)

    def reloads(self) -> dict[str, float]:
        text = httpx.get(f"{self.admin}/metrics").text
        found = {}
        for line in text.splitlines():
            if line.startswith("strangler_config_reloads_total{"):
                result = line.split('result="')[1].split('"')[0]
                found[result] = float(line.rsplit(" ", 1)[1])
        return found

    def route_names(self) -> list[str]:
        return [r["name"] for r in httpx.get(f"{self.admin}/routes").json()["routes"]]

    def stop(self) -> int:
        return self.process.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, list[Served]]]:
    config = tmp_path / "conf" / "routes.yaml"
    config.parent.mkdir()
    config.write_text(table("first"))
    started: list[Served] = []
    yield config, started
    for server in started:
        assert server.stop() == 0


def start(config: Path, started: list[Served], *flags: str) -> Served:
    server = Served(config, *flags)
    started.append(server)
    assert server.reloads() == {"success": 1.0, "failure": 0.0}  # the load at start
    return server


def settled(server: Served, name: str) -> None:
    assert wait_for(lambda: server.route_names() == [name], timeout=10)
    time.sleep(1.0)  # longer than the debounce: any second reload would have happened


def test_an_edit_in_place_applies_exactly_one_reload(served: tuple[Path, list[Served]]) -> None:
    config, started = served
    server = start(config, started)
    with open(config, "r+") as handle:  # rewrite the same inode, as editors without backups do
        text = handle.read().replace("first", "second")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    settled(server, "second")
    assert server.reloads() == {"success": 2.0, "failure": 0.0}


def test_a_file_renamed_over_the_table_applies_exactly_one_reload(
    served: tuple[Path, list[Served]],
) -> None:
    config, started = served
    server = start(config, started)
    staged = config.with_name(".routes.yaml.new")
    staged.write_text(table("renamed"))
    os.replace(staged, config)
    settled(server, "renamed")
    assert server.reloads() == {"success": 2.0, "failure": 0.0}


def test_a_configmap_symlink_swap_applies_exactly_one_reload(tmp_path: Path) -> None:
    # The layout the kubelet makes for a ConfigMap mounted as a directory.
    mount = tmp_path / "mount"
    first = mount / "..2026_11_27_06_00_00.000000001"
    first.mkdir(parents=True)
    (first / "routes.yaml").write_text(table("from-configmap"))
    (mount / "..data").symlink_to(first.name)
    (mount / "routes.yaml").symlink_to("..data/routes.yaml")
    server = Served(mount / "routes.yaml")
    try:
        assert server.route_names() == ["from-configmap"]
        # An update: a new timestamped directory, a temporary link renamed over ..data, the
        # old directory removed.
        second = mount / "..2026_11_27_06_05_00.000000002"
        second.mkdir()
        (second / "routes.yaml").write_text(table("updated"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")
        shutil.rmtree(first)
        settled(server, "updated")
        assert server.reloads() == {"success": 2.0, "failure": 0.0}
    finally:
        assert server.stop() == 0


def test_sighup_and_post_reload_with_the_watcher_off(served: tuple[Path, list[Served]]) -> None:
    config, started = served
    server = start(config, started, "--no-watch")
    config.write_text(table("by-signal"))
    time.sleep(1.0)
    assert server.route_names() == ["first"]  # --no-watch: the edit alone changes nothing
    server.process.proc.send_signal(signal.SIGHUP)
    settled(server, "by-signal")
    assert server.reloads() == {"success": 2.0, "failure": 0.0}
    # An unchanged file is a no-op, reported as such.
    server.process.proc.send_signal(signal.SIGHUP)
    unchanged = httpx.post(f"{server.admin}/reload", json={}).json()
    assert unchanged["changed"] is False
    assert server.reloads() == {"success": 2.0, "failure": 0.0}
    config.write_text(table("by-admin"))
    changed = httpx.post(f"{server.admin}/reload", json={})
    assert changed.status_code == 200
    assert changed.json()["changed"] is True
    assert changed.json()["version"] == httpx.get(f"{server.admin}/routes").json()["version"]
    assert server.route_names() == ["by-admin"]
    assert server.reloads() == {"success": 3.0, "failure": 0.0}
    assert server.process.proc.poll() is None  # SIGHUP did not end the process


BROKEN = {
    "syntax": ("version: 1\nbackends: {up: [}\n", "invalid YAML"),
    "unknown key": (table("x").replace("  up: {", "  up: {colour: red, "), "unknown key 'colour'"),
    "unknown backend": (table("x").replace("backend: up", "backend: nope"), "unknown backend"),
    "weights": (table("x").replace("backend: up", "split: {up: 90}"), "must sum to 100"),
    "handler import": (
        table("x", extra="  fn: {function: 'no_such_module:handler'}\n"),
        "cannot import 'no_such_module'",
    ),
    "empty": ("", "the file is empty"),
}


def test_invalid_tables_are_rejected_and_the_old_one_keeps_serving(
    served: tuple[Path, list[Served]],
) -> None:
    config, started = served
    upstream = RawUpstream(answer(response(body=b"still here"))).start()
    try:
        config.write_text(table("good", upstream.url))
        server = start(config, started, "--no-watch")
        good_version = httpx.get(f"{server.admin}/routes").json()["version"]
        for number, (kind, (text, message)) in enumerate(BROKEN.items(), 1):
            config.write_text(text)
            reply = httpx.post(f"{server.admin}/reload", json={})
            assert reply.status_code == 422, kind
            body = reply.json()
            assert body["error"] == "invalid_table"
            assert body["version"] == good_version
            assert any(message in e["message"] for e in body["errors"]), (kind, body)
            assert all(e["file"] == str(config) and e["line"] >= 1 for e in body["errors"])
            assert httpx.get(server.gateway + "/").text == "still here", kind
            routes = httpx.get(f"{server.admin}/routes").json()
            assert routes["version"] == good_version
            assert routes["last_error"]["errors"] == body["errors"]
            assert server.reloads() == {"success": 1.0, "failure": float(number)}
        page = httpx.get(f"{server.admin}/").text
        assert "The last routing table was rejected" in page
        config.write_text(table("fixed", upstream.url))
        assert httpx.post(f"{server.admin}/reload", json={}).status_code == 200
        assert httpx.get(f"{server.admin}/routes").json()["last_error"] is None
        metrics = httpx.get(f"{server.admin}/metrics").text
        assert "strangler_config_last_reload_successful 1.0" in metrics
    finally:
        upstream.stop()


# ---- under load ------------------------------------------------------------------------------


def versions(tmp_path: Path, a: str, b: str, stream: str) -> tuple[str, str]:
    def text(target: str) -> str:
        return (
            "version: 1\nbackends:\n"
            f"  a: {{url: '{a}'}}\n  b: {{url: '{b}'}}\n  s: {{url: '{stream}'}}\n"
            "routes:\n"
            f"  - {{name: data, match: {{path: /data}}, backend: {target}}}\n"
            "  - {name: stream, match: {path: /stream}, backend: s}\n"
        )

    return text("a"), text("b")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_reloading_many_times_a_second_under_load_fails_nothing(tmp_path: Path) -> None:
    chunk = b"x" * 4096

    async def stream(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * 20))
        for _ in range(20):
            await exchange.send(chunk)
            await asyncio.sleep(0.01)

    upstreams = {
        "a": RawUpstream(answer(response(body=b"A"))).start(),
        "b": RawUpstream(answer(response(body=b"B"))).start(),
        "s": RawUpstream(stream).start(),
    }
    first, second = versions(tmp_path, upstreams["a"].url, upstreams["b"].url, upstreams["s"].url)
    config = tmp_path / "routes.yaml"
    config.write_text(first)
    seen: dict[str, int] = {}
    failures: list[str] = []
    stop = threading.Event()
    try:
        with running_gateway(config, watch=False) as (_, servers):
            base, admin = servers.url("gateway"), servers.url("admin")

            def client(path: str) -> None:
                with httpx.Client(base_url=base, timeout=10) as http:  # keep-alive
                    while not stop.is_set():
                        try:
                            reply = http.get(path)
                        except httpx.HTTPError as exc:
                            failures.append(f"{path}: {exc!r}")
                            continue
                        body = reply.content
                        ok = reply.status_code == 200 and (
                            body in (b"A", b"B") if path == "/data" else body == chunk * 20
                        )
                        if not ok:
                            failures.append(f"{path}: {reply.status_code} {len(body)} bytes")
                        key = body.decode() if path == "/data" else "stream"
                        seen[key] = seen.get(key, 0) + 1

            live = [first]

            def load(seconds: float) -> int:
                """Traffic from five keep-alive clients while the table flips every 50 ms."""
                stop.clear()
                workers = [
                    threading.Thread(target=client, args=(p,))
                    for p in ("/data", "/data", "/data", "/stream", "/stream")
                ]
                for worker in workers:
                    worker.start()
                flips = 0
                deadline = time.monotonic() + seconds
                with httpx.Client(base_url=admin) as control:
                    while time.monotonic() < deadline:
                        live[0] = second if live[0] == first else first
                        config.write_text(live[0])
                        result = control.post("/reload", json={}).json()
                        assert result["changed"] is True, result
                        flips += 1
                        time.sleep(0.05)
                stop.set()
                for worker in workers:
                    worker.join(20)
                return flips

            # A first round sizes the connection pools; a leak would grow with every reload
            # of the second, longer round.
            load(1.5)
            time.sleep(0.5)
            fds_before, tasks_before = open_fds(), servers.tasks()
            reloads = load(4)
            assert reloads >= 40
            assert failures == []
            assert seen.get("A", 0) > 0
            assert seen.get("B", 0) > 0
            assert seen.get("stream", 0) > 10
            assert wait_for(lambda: servers.tasks() <= tasks_before, timeout=10)
            assert wait_for(lambda: open_fds() <= fds_before + 2, timeout=10), (
                open_fds(),
                fds_before,
            )
    finally:
        for upstream in upstreams.values():
            upstream.stop()
