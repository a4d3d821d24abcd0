"""``serve --workers N`` as real processes: shared sockets, metrics summed over workers, every
reload trigger reaching every worker, dead workers replaced and cleaned up, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support import (
    LOOPBACK,
    Exchange,
    Process,
    RawClient,
    RawUpstream,
    response,
    serve_process,
    wait_for,
)

pytestmark = pytest.mark.sockets


@pytest.fixture
def upstreams() -> Iterator[tuple[RawUpstream, RawUpstream]]:
    def answering(body: bytes) -> RawUpstream:
        async def script(exchange: Exchange) -> None:
            await exchange.send(response(body=body))

        return RawUpstream(script).start()

    one, two = answering(b"one"), answering(b"two")
    yield one, two
    one.stop()
    two.stop()


def write(config: Path, one: RawUpstream, two: RawUpstream, route_to: str, extra: str = "") -> None:
    config.write_text(
        "version: 1\nbackends:\n"
        f"  one: {{url: '{one.url}', kind: legacy}}\n"
        f"  two: {{url: '{two.url}'}}\n"
        "routes:\n"
        f"  - {{name: main, match: {{path: /}}, backend: {route_to}}}\n" + extra
    )


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def samples(admin: str, name: str) -> dict[str, float]:
    """Every series of ``name`` in one scrape: its label text -> value."""
    found = {}
    for line in httpx.get(f"{admin}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def total(admin: str, name: str) -> float:
    return sum(samples(admin, name).values())


def get(port: int) -> bytes:
    return RawClient(port).request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").body


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory


def start(
    config: Path, metrics_dir: Path, *flags: str, workers: int = 2
) -> tuple[Process, int, str]:
    process, gateway, admin = serve_process(
        config,
        "--workers",
        str(workers),
        *flags,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    process.wait_for_line(rf"workers\s+{workers}")
    return process, int(gateway.rsplit(":", 1)[1]), admin


def served_by(pid: int, metrics_dir: Path, scratch: Path) -> float:
    """Requests one worker counted, from its own counter file alone."""
    alone = scratch / f"only-{pid}"
    alone.mkdir(exist_ok=True)
    shutil.copy(metrics_dir / f"counter_{pid}.db", alone)
    return sum(
        sample.value
        for family in MultiProcessCollector(None, str(alone)).collect()
        for sample in family.samples
        if sample.name == "strangler_requests_total"
    )


def live_files(pid: int, metrics_dir: Path) -> list[str]:
    """The files of a worker's live gauges (in flight, weights, reload state)."""
    return [n for n in os.listdir(metrics_dir) if n.endswith(f"_{pid}.db") and "live" in n]


def reloaded_everywhere(admin: str, port: int) -> None:
    """Both workers loaded the second table exactly once each, and every request sees it."""
    assert wait_for(
        lambda: samples(admin, "strangler_config_reloads_total")['{result="success"}'] == 4
    )
    assert {get(port) for _ in range(100)} == {b"two"}


def test_workers_share_the_port_and_the_metrics_add_up(
    tmp_path: Path, metrics_dir: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    config = tmp_path / "routes.yaml"
    write(config, *upstreams, route_to="one")
    process, port, admin = start(config, metrics_dir)
    try:
        workers = children(process.proc.pid)
        assert len(workers) == 2
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda _: get(port), range(400))) == {b"one"}
        # Whichever worker answers the scrape reports the sum over both: each worker's
        # tallies reach the shared files within a second.
        assert wait_for(lambda: total(admin, "strangler_requests_total") == 400, timeout=5)
        for _ in range(6):
            assert total(admin, "strangler_requests_total") == 400
            assert samples(admin, "strangler_build_info") == {'{version="0.1.0"}': 1.0}
            in_flight = samples(admin, "strangler_requests_in_flight")
            assert in_flight == {'{route="main"}': 0.0, '{route="none"}': 0.0}
        served = httpx.get(f"{admin}/migration").json()["totals"]["requests"]
        assert served == {"legacy": 400, "new": 0, "total": 400}
        # Both workers took connections from the shared socket: each one's own file counts
        # some of the requests.
        for pid in workers:
            assert 0 < served_by(pid, metrics_dir, tmp_path) < 400
    finally:
        assert process.stop() == 0
    assert [name for name in os.listdir(metrics_dir) if "live" in name] == []


def test_sighup_reloads_every_worker_exactly_once(
    tmp_path: Path, metrics_dir: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    config = tmp_path / "routes.yaml"
    write(config, *upstreams, route_to="one")
    process, port, admin = start(config, metrics_dir, "--no-watch")
    try:
        assert samples(admin, "strangler_config_reloads_total")['{result="success"}'] == 2
        write(config, *upstreams, route_to="two")
        process.proc.send_signal(signal.SIGHUP)
        reloaded_everywhere(admin, port)
        time.sleep(0.5)  # a second reload per worker would have been counted by now
        assert samples(admin, "strangler_config_reloads_total")['{result="success"}'] == 4
        assert process.proc.poll() is None
    finally:
        assert process.stop() == 0


def test_a_reload_through_the_admin_api_reaches_every_worker(
    tmp_path: Path, metrics_dir: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    config = tmp_path / "routes.yaml"
    extra = "  - {name: extra, match: {path: /extra}, backend: two}\n"
    write(config, *upstreams, route_to="one", extra=extra)
    process, port, admin = start(config, metrics_dir, "--no-watch")
    try:
        assert RawClient(port).request(b"GET /extra HTTP/1.1\r\nHost: gw\r\n\r\n").body == b"two"
        write(config, *upstreams, route_to="two")
        reply = httpx.post(f"{admin}/reload", json={})
        assert (reply.status_code, reply.json()["changed"]) == (200, True)
        reloaded_everywhere(admin, port)
        # The dropped route's series are gone from every worker's view, files or not.
        for _ in range(6):
            series = samples(admin, "strangler_requests_total")
            assert series
            assert not [labels for labels in series if 'route="extra"' in labels]
    finally:
        assert process.stop() == 0


def test_a_dead_worker_is_replaced_and_its_live_gauges_removed(
    tmp_path: Path, metrics_dir: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    config = tmp_path / "routes.yaml"
    write(config, *upstreams, route_to="one")
    process, port, admin = start(config, metrics_dir)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda _: get(port), range(200))) == {b"one"}
        victim, survivor = children(process.proc.pid)
        assert wait_for(lambda: served_by(victim, metrics_dir, tmp_path) > 0, timeout=5)
        assert live_files(victim, metrics_dir)
        # A worker dies only after living a while; one dying at once stops everything.
        time.sleep(5)
        os.kill(victim, signal.SIGKILL)
        # One read of the children per check, kept: the kernel's list may miss a child that is
        # being forked while it is read (proc(5), "children"), so a second read could differ.
        seen: list[int] = []

        def replaced() -> bool:
            seen[:] = children(process.proc.pid)
            return len(seen) == 2 and victim not in seen and survivor in seen

        assert wait_for(replaced, timeout=20), seen
        (replacement,) = (pid for pid in seen if pid != survivor)
        assert live_files(victim, metrics_dir) == []
        assert wait_for(lambda: bool(live_files(replacement, metrics_dir)), timeout=20)
        assert get(port) == b"one"
        # The dead worker's requests still count: totals never go backwards (its tallies had
        # reached its files, as every worker's do within a second).
        assert wait_for(lambda: total(admin, "strangler_requests_total") == 201, timeout=5)
        assert total(admin, "strangler_requests_total") == 201
        assert samples(admin, "strangler_build_info") == {'{version="0.1.0"}': 1.0}
    finally:
        code = process.stop()
        assert code == 0, process.output()


def gone(pid: int) -> bool:
    """The process has ended (a worker's supervisor is its parent, but once that is killed
    it is re-parented)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie re-parented to an init that has not reaped it yet has stopped too.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def refused(port: int) -> bool:
    """Nothing listens on the port any more: a connection is refused outright. (A probe that
    does connect sends nothing and closes at once, so it adds no request.)"""
    try:
        socket.create_connection((LOOPBACK, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


#: How long the slow upstream still holds its answer once both workers stopped listening.
HOLD = 1.5
#: What the slow upstream answers, once the test lets it: big enough to take several writes.
SLOW_BODY = b"".join(b"in flight when the supervisor died %05d\n" % i for i in range(2000))


def test_workers_drain_when_their_supervisor_is_killed(
    tmp_path: Path, metrics_dir: Path, upstreams: tuple[RawUpstream, RawUpstream]
) -> None:
    release = threading.Event()

    async def held(exchange: Exchange) -> None:
        # Answers only when the test says so (bounded, so nothing can hang), and then in full.
        deadline = time.monotonic() + 30
        while not release.is_set():
            if time.monotonic() > deadline:
                exchange.close()
                return
            await asyncio.sleep(0.01)
        await exchange.send(response(body=SLOW_BODY))

    slow = RawUpstream(held).start()
    try:
        config = tmp_path / "routes.yaml"
        write(config, slow, upstreams[1], route_to="one")
        # The drain's own bound, stated here rather than left to the default: far longer than
        # the test holds the request.
        process, port, _ = start(config, metrics_dir, "--drain-timeout", "30")
        workers = children(process.proc.pid)
        try:
            assert len(workers) == 2
            drain_in_flight(process, port, workers, slow, release)
        finally:
            if process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait()
            for pid in workers:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
    finally:
        release.set()
        slow.stop()


def drain_in_flight(
    process: Process, port: int, workers: list[int], slow: RawUpstream, release: threading.Event
) -> None:
    with contextlib.closing(RawClient(port, timeout=30)) as client:
        client.send(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        # In flight: a worker has passed the request on and waits for the upstream's answer.
        assert wait_for(lambda: slow.heads_received == 1, timeout=10)

        process.proc.kill()
        process.proc.wait()

        # Both workers notice and stop listening (the supervisor's copy of the socket died
        # with it), so new connections are refused, while the request is still held.
        assert wait_for(lambda: refused(port), timeout=15)
        # The idle worker has nothing to wait for and exits; the other stays for its request.
        assert wait_for(lambda: sum(gone(pid) for pid in workers) == 1, timeout=15), (
            f"not one worker gone and one left: {[(pid, gone(pid)) for pid in workers]}"
        )
        (busy,) = (pid for pid in workers if not gone(pid))
        assert slow.requests[0].target == "/slow"

        # The answer stays slow a while longer, well into the busy worker's drain: a worker that
        # stopped without waiting for it, or waited too short a time, would cut it.
        time.sleep(HOLD)
        assert not gone(busy)
        release.set()
        answered = client.read_response()
        assert (answered.status, answered.body) == (200, SLOW_BODY)
        # Nothing more: the draining worker closes the connection after that response.
        assert client.read_until_closed() == b""
        assert len(slow.requests) == 1

    assert wait_for(lambda: gone(busy), timeout=15)
    assert refused(port)


def test_a_table_that_does_not_load_stops_before_any_worker_starts(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("version: 1\nbackends: {}\nroutes: []\n")
    args = [sys.executable, "-m", "proxy", "serve", "-c", str(config), "--workers", "2"]
    # Loopback and kernel-chosen ports, should anything be bound after all.
    args += ["--host", LOOPBACK, "--port", "0", "--admin-port", "0"]
    process = Process(args)
    try:
        assert process.proc.wait(20) == 1
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()
    output = process.output()
    # Every process that loads the table reports its problems: said once, only the supervisor
    # loaded it. A worker started would have said them again, and the supervisor that it
    # failed.
    problem = f"{config}:2:11: backends: at least one backend is required\n"
    assert output.count(problem) == 1, output
    assert output.count(f"strangler: {config}: not loaded (2 problems)\n") == 1, output
    assert "worker" not in output, output
