"""``make bench``: strangler beside nginx and the best Python proxy, measured in the same run.

Everything runs on loopback ports chosen here and is stopped by process id at the end:

- the upstream: nginx serving a fixed 100-byte or 16 KiB body for any path;
- ``nginx``: nginx 1 worker as a reverse proxy in front of it (the anchor);
- ``aiohttp``: an aiohttp server with a pooled aiohttp client on uvloop, streaming, adding and
  checking nothing (bench/aiohttp_proxy.py): the Python anchor;
- ``strangler``: ``strangler serve`` with a 20-route table, a sticky split, metrics and the
  access log on (to a file);
- ``strangler-nolog``: the same with ``--access-log off`` (the 100 B scenario only: what the
  access log costs, in the same run);
- ``strangler-noinv``: the same with ``--inventory off`` (the 100 B scenario only: what the
  inventory of legacy traffic costs).
- ``strangler-2w``: the same with ``--workers 2`` (the workers scenario only).

The WebSocket scenarios (``ws-*``, bench/ws.py) add an echo upstream (``direct``: the load
client straight to it) and a route to it in each proxy: nginx's WebSocket proxying, the aiohttp
proxy's message relay, strangler's tunnel (a ``url`` backend); bench/ws.py's client counts
echoed messages per second and their round-trip latency in place of wrk.

The server under test is pinned to core 0 (two cores for two workers), wrk and the upstream
(the WebSocket client and echo server too) to the last core, when the machine has more than
one. Configurations are run interleaved, ``--runs`` times each, and the median is reported:
req/s (messages/s for WebSocket), p50, p99, CPU microseconds per request (user + system of the
server's processes), peak RSS, and req/s as a ratio to nginx in the same scenario and to the
aiohttp proxy (for WebSocket, to the client alone against the echo server as well), and
p99 / p50 (how much longer the slowest requests wait than the typical one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")
CORES = sorted(os.sched_getaffinity(0))
SERVER_CORES = {CORES[0]}
CLIENT_CORES = {CORES[-1]}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    servers: tuple[str, ...]
    #: Per server, a path other than ``path`` (the function route is strangler's alone).
    paths: dict[str, str] = field(default_factory=dict)
    #: A WebSocket scenario: bench/ws.py's client instead of wrk, ``burst`` messages sent on
    #: each connection before their echoes are awaited (1: lock-step).
    websocket: bool = False
    burst: int = 1


#: The WebSocket scenarios' paths: the client alone against the echo server, then each proxy.
WS_SERVERS = ("direct", "nginx", "aiohttp", "strangler")


SCENARIOS = {
    "100b-32": Scenario(
        "100 B body, 32 connections",
        "/api/catalog/items",
        32,
        ("nginx", "aiohttp", "strangler", "strangler-nolog", "strangler-noinv"),
    ),
    "100b-128": Scenario(
        "100 B body, 128 connections",
        "/api/catalog/items",
        128,
        ("nginx", "aiohttp", "strangler"),
    ),
    "16k-32": Scenario(
        "16 KiB body, 32 connections",
        "/16k/api/catalog/items",
        32,
        ("nginx", "aiohttp", "strangler"),
    ),
    "function-32": Scenario(
        "function backend (strangler) vs proxied 100 B, 32 connections",
        "/api/catalog/items",
        32,
        ("nginx", "aiohttp", "strangler"),
        {"strangler": "/fn/items"},
    ),
    "workers-32": Scenario(
        "one worker vs two, 100 B body, 32 connections",
        "/api/catalog/items",
        32,
        ("nginx", "strangler", "strangler-2w"),
    ),
    # Names are formatted with the message size (--ws-bytes).
    "ws-32": Scenario(
        "WebSocket echo, {bytes} B messages in lock-step, 32 connections",
        "/ws/echo",
        32,
        WS_SERVERS,
        websocket=True,
    ),
    "ws-burst-32": Scenario(
        "WebSocket echo, {bytes} B messages in bursts of 8, 32 connections",
        "/ws/echo",
        32,
        WS_SERVERS,
        websocket=True,
        burst=8,
    ),
}
#: ``--scenarios`` may name these groups as well as single scenarios.
GROUPS = {
    "http": [key for key, s in SCENARIOS.items() if not s.websocket],
    "ws": [key for key, s in SCENARIOS.items() if s.websocket],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def pinned(cores: set[int]) -> Callable[[], None]:
    def pin() -> None:
        if len(CORES) > 1:
            os.sched_setaffinity(0, cores)

    return pin


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The process and all its descendants (nginx's worker, strangler's workers)."""
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as handle:
                    queue += [int(p) for p in handle.read().split()]
            except OSError:
                pass
        return found

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return total

    def peak_rss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as handle:
                    match = re.search(r"VmHWM:\s+(\d+)", handle.read())
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total


def core_ticks(cores: set[int]) -> tuple[int, int]:
    """Busy and total ticks of these cores since boot (/proc/stat): steal and idle count as
    not busy, since the processes pinned there did not run then."""
    busy = total = 0
    with open("/proc/stat") as handle:
        for line in handle:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                ticks = [int(v) for v in values[:8]]
                busy += sum(ticks[:3]) + ticks[5] + ticks[6]  # user nice system irq softirq
                total += sum(ticks)
    return busy, total


def wait_until_serving(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                reply.read()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def nginx_config(directory: Path, name: str, body: str) -> Path:
    """An nginx configuration running one worker in the foreground, logging nothing."""
    config = directory / f"{name}.conf"
    config.write_text(
        f"""daemon off;
worker_processes 1;
pid {directory}/{name}.pid;
error_log {directory}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {body}
}}
"""
    )
    return config


def start_nginx(directory: Path, name: str, body: str, cores: set[int]) -> subprocess.Popen[bytes]:
    config = nginx_config(directory, name, body)
    return subprocess.Popen(
        [shutil.which("nginx") or "nginx", "-c", str(config), "-p", str(directory)],
        preexec_fn=pinned(cores),
        stderr=subprocess.DEVNULL,
    )


def strangler_table(directory: Path, upstream: str, echo: str | None = None) -> Path:
    """Twenty routes as a migration has them, the measured ones among them: a sticky split
    between two backends (both the upstream) and a function route; with ``echo`` (the
    WebSocket echo server), a 21st route to it as a ``url`` backend, which strangler tunnels."""
    names = [
        "auth",
        "users",
        "orders",
        "cart",
        "checkout",
        "search",
        "reviews",
        "images",
        "admin",
        "reports",
        "billing",
        "shipping",
        "wishlist",
        "inventory",
        "pricing",
        "promotions",
    ]
    lines = [
        "version: 1",
        "backends:",
        f"  monolith: {{url: '{upstream}', kind: legacy}}",
        f"  catalog: {{url: '{upstream}'}}",
        "  fn: {function: 'bench.handler:handler', max_concurrency: 512}",
        *([f"  echo: {{url: '{echo}'}}"] if echo else []),
        "routes:",
        "  - {name: everything-else, match: {path: /}, backend: monolith}",
    ]
    lines += [
        f"  - {{name: {name}, match: {{path: /{name}}}, backend: monolith}}" for name in names
    ]
    for name, path in (("catalog", "/api/catalog"), ("catalog-16k", "/16k/api/catalog")):
        lines += [
            f"  - name: {name}",
            f"    match: {{path: {path}, methods: [GET, HEAD]}}",
            "    split: {catalog: 50, monolith: 50}",
            "    sticky: {cookie: sid}",
        ]
    lines.append("  - {name: fn, match: {path: /fn}, backend: fn}")
    if echo:
        lines.append("  - {name: ws, match: {path: /ws}, backend: echo}")
    table = directory / "routes.yaml"
    table.write_text("\n".join(lines) + "\n")
    return table


def wait_until_listening(port: int, timeout: float = 30) -> None:
    """For the echo server, which answers nothing but a WebSocket handshake."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


@contextmanager
def servers(
    directory: Path, wanted: set[str], websocket: bool = False
) -> Iterator[dict[str, Server]]:
    """``websocket``: start the echo server too (``direct``) and route ``/ws`` to it."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[BinaryIO] = []
    try:
        # nginx started as root serves files as `nobody`: the bodies must be readable to it.
        directory.chmod(0o755)
        (directory / "body").mkdir()
        (directory / "body" / "b100").write_bytes(b"x" * 100)
        (directory / "body" / "b16k").write_bytes(b"y" * 16384)
        upstream_port = free_port()
        started.append(
            start_nginx(
                directory,
                "upstream",
                f"""server {{
        listen {LOOPBACK}:{upstream_port};
        root {directory}/body;
        default_type text/plain;
        location /16k/ {{ try_files /b16k =404; }}
        location / {{ try_files /b100 =404; }}
    }}""",
                CLIENT_CORES,
            )
        )
        upstream = f"http://{LOOPBACK}:{upstream_port}"
        wait_until_serving(upstream + "/")
        found: dict[str, Server] = {}
        python = sys.executable
        echo, echo_location = None, ""
        if websocket:
            echo_port = free_port()
            process = subprocess.Popen(
                [python, "-m", "bench.ws", "serve", str(echo_port)],
                cwd=ROOT,
                preexec_fn=pinned(CLIENT_CORES),
            )
            started.append(process)
            wait_until_listening(echo_port)
            echo = f"http://{LOOPBACK}:{echo_port}"
            found["direct"] = Server("direct", echo, process)
            # nginx's documented WebSocket proxying; without Connection: upgrade nginx would
            # send the request on as plain HTTP. Tunnels may idle for as long as a run lasts.
            echo_location = f"""
        location /ws {{
            proxy_pass {echo};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}"""
        if "nginx" in wanted:
            port = free_port()
            process = start_nginx(
                directory,
                "proxy",
                f"""upstream app {{ server {LOOPBACK}:{upstream_port}; keepalive 64; }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}{echo_location}
    }}""",
                SERVER_CORES,
            )
            started.append(process)
            found["nginx"] = Server("nginx", f"http://{LOOPBACK}:{port}", process)
        if "aiohttp" in wanted:
            port = free_port()
            process = subprocess.Popen(
                [
                    python,
                    "-m",
                    "bench.aiohttp_proxy",
                    str(port),
                    upstream,
                    *([echo] if echo else []),
                ],
                cwd=ROOT,
                preexec_fn=pinned(SERVER_CORES),
            )
            started.append(process)
            found["aiohttp"] = Server("aiohttp", f"http://{LOOPBACK}:{port}", process)
        table = strangler_table(directory, upstream, echo)
        for name, workers, cores, access_log, inventory in (
            ("strangler", 1, SERVER_CORES, "json", "on"),
            ("strangler-nolog", 1, SERVER_CORES, "off", "on"),
            ("strangler-noinv", 1, SERVER_CORES, "json", "off"),
            ("strangler-2w", 2, set(CORES[:2]), "json", "on"),
        ):
            if name not in wanted:
                continue
            port = free_port()
            # The access log goes to a file, as a container runtime's pipe takes it.
            log = (directory / f"{name}.access.log").open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [
                    python,
                    "-m",
                    "proxy",
                    "serve",
                    "-c",
                    str(table),
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(port),
                    "--admin-port",
                    str(free_port()),
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                    "--no-watch",
                    # Nothing in front of it to notice a drain: stop at once.
                    "--shutdown-grace",
                    "0",
                    "--access-log",
                    access_log,
                    "--inventory",
                    inventory,
                ],
                cwd=ROOT,
                stdout=log,
                preexec_fn=pinned(cores),
            )
            started.append(process)
            found[name] = Server(name, f"http://{LOOPBACK}:{port}", process)
        for server in found.values():
            if server.name != "direct":
                wait_until_serving(server.url + "/api/catalog/items")
        yield found
    finally:
        # Proxies first, each gone before the next, the upstream last: nothing still serving
        # meets a closed upstream.
        for process in reversed(started):
            if process.poll() is None:
                # nginx shuts down gracefully on SIGQUIT (SIGTERM is its fast stop).
                nginx = os.path.basename(str(process.args[0])) == "nginx"
                process.send_signal(signal.SIGQUIT if nginx else signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


@dataclass
class Measure:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    #: Why a WebSocket client could not open its connections (None: it could).
    failed: str | None = None
    #: The share of its core the WebSocket client (and the echo server beside it) kept busy:
    #: near 1, the client is the ceiling rather than the path. None: not measured.
    client_busy: float | None = None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if match is None:
        raise RuntimeError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(server: Server, path: str, connections: int, duration: float) -> Measure:
    wrk = shutil.which("wrk") or "wrk"
    before = server.cpu_ticks()
    output = subprocess.run(
        [
            wrk,
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{duration:g}s",
            "--latency",
            "-H",
            "Cookie: sid=bench-user",
            server.url + path,
        ],
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=pinned(CLIENT_CORES),
    ).stdout
    ticks = server.cpu_ticks() - before
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    cpu = ticks / TICKS * 1e6 / total if total else 0.0
    return Measure(rate, _latency(output, "50"), _latency(output, "99"), cpu, errors)


def run_ws(
    server: Server, path: str, connections: int, duration: float, size: int, burst: int
) -> Measure:
    """bench/ws.py's client, pinned where wrk is; CPU is counted from its ``ready`` (every
    connection open: handshakes are not measured) to its result."""
    uri = "ws://" + server.url.removeprefix("http://") + path
    command = [sys.executable, "-m", "bench.ws", "load", uri]
    command += ["--connections", str(connections), "--bytes", str(size)]
    command += ["--burst", str(burst), "--duration", f"{duration:g}"]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pinned(CLIENT_CORES),
    ) as client:
        assert client.stdout is not None
        ready = client.stdout.readline()
        before, core_before = server.cpu_ticks(), core_ticks(CLIENT_CORES)
        line = client.stdout.readline()
        ticks, core_after = server.cpu_ticks() - before, core_ticks(CLIENT_CORES)
        client.wait(timeout=60)
    if ready.strip() != "ready" or not line:
        raise RuntimeError(f"the WebSocket client for {uri} ended with {client.returncode}")
    result = json.loads(line)
    total = result["messages"]
    cpu = ticks / TICKS * 1e6 / total if total else 0.0
    busy, elapsed = (after - before for after, before in zip(core_after, core_before, strict=True))
    return Measure(
        result["messages_per_second"],
        result["p50_ms"],
        result["p99_ms"],
        cpu,
        result["errors"],
        result["failed"],
        # Unpinned (one core), the client shares it with the server: the figure says nothing.
        busy / elapsed if elapsed and len(CORES) > 1 else None,
    )


def median(measures: list[Measure]) -> Measure:
    return Measure(
        statistics.median(m.requests_per_second for m in measures),
        statistics.median(m.p50_ms for m in measures),
        statistics.median(m.p99_ms for m in measures),
        statistics.median(m.cpu_us_per_request for m in measures),
        sum(m.errors for m in measures),
        next((m.failed for m in measures if m.failed), None),
        statistics.median(busy)
        if (busy := [m.client_busy for m in measures if m.client_busy is not None])
        else None,
    )


def _ratio(value: float, anchor: float | None, digits: int) -> str:
    return f"{value / anchor:.{digits}f}" if anchor else "-"


def report(
    key: str,
    scenario: Scenario,
    results: dict[str, Measure],
    rss: dict[str, int],
    ws_bytes: int,
) -> list[str]:
    """One Markdown table. A WebSocket scenario counts messages (round trips) instead of
    requests and has a ``vs direct`` column: the share of the client's own ceiling a path
    keeps (the ``direct`` row's CPU and RSS are the echo server's)."""
    anchor = results["nginx"].requests_per_second
    python = results["aiohttp"].requests_per_second if "aiohttp" in results else None
    direct = results["direct"].requests_per_second if "direct" in results else None
    unit = "msg" if scenario.websocket else "req"
    versus = "| vs direct " if scenario.websocket else ""
    lines = [
        f"### {scenario.name.format(bytes=ws_bytes)} (`{key}`)",
        "",
        f"| server | {unit}/s | p50 ms | p99 ms | p99/p50 | CPU µs/{unit} | peak RSS MiB | errors "
        f"{versus}| vs nginx | vs aiohttp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (3 if scenario.websocket else 2),
    ]
    notes, busy = [], []
    for name in scenario.servers:
        m = results[name]
        rate = m.requests_per_second
        versus_direct = f"| {_ratio(rate, direct, 3)} " if scenario.websocket else ""
        lines.append(
            f"| {name} | {rate:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
            f"{_ratio(m.p99_ms, m.p50_ms, 1)} | {m.cpu_us_per_request:,.0f} "
            f"| {rss[name] / 1024:.1f} | {m.errors} {versus_direct}| {_ratio(rate, anchor, 3)} "
            f"| {_ratio(rate, python, 2)} |"
        )
        if m.failed:
            notes.append(f"- {name}: no WebSocket connection opened: {m.failed}")
        if m.client_busy is not None:
            # The server's share of a core from its CPU per message (direct has none: the
            # echo server it would be shares the client's core).
            server = "-" if name == "direct" else f"{m.cpu_us_per_request * rate / 1e6:.0%}"
            busy.append(f"{name} {m.client_busy:.0%} / {server}")
    for without, what in (
        ("strangler-nolog", "the access log"),
        ("strangler-noinv", "the inventory (half of the requests reach the legacy backend)"),
    ):
        if "strangler" in results and without in results:
            on, off = results["strangler"], results[without]
            notes.append(
                f"- {what}: {on.requests_per_second:,.0f} req/s with it, "
                f"{off.requests_per_second:,.0f} without: "
                f"{_ratio(on.requests_per_second, off.requests_per_second, 3)} of the rate, "
                f"{on.cpu_us_per_request - off.cpu_us_per_request:+.1f} µs CPU per request"
            )
    if busy:
        notes.append(
            "- cores busy, the client's (load client and echo server) / the server's: "
            f"{', '.join(busy)}; the client's near 100 %: the client set the rate; neither: "
            "the round trips' latency did"
        )
    return [*lines, "", *notes, *([""] if notes else [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per wrk or WebSocket client run"
    )
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per config")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"of {', '.join(SCENARIOS)}, or the groups {' and '.join(GROUPS)}",
    )
    parser.add_argument(
        "--ws-bytes", type=int, default=100, help="bytes per message in the ws-* scenarios"
    )
    args = parser.parse_args()
    named = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    # Groups expanded in place, each scenario run once however often it is named.
    chosen = list(dict.fromkeys(key for s in named for key in GROUPS.get(s, [s])))
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (apt-get install nginx wrk)", file=sys.stderr)
            return 2
    wanted = {name for key in chosen for name in SCENARIOS[key].servers}
    websocket = any(SCENARIOS[key].websocket for key in chosen)

    def measure(server: Server, scenario: Scenario, connections: int, duration: float) -> Measure:
        path = scenario.paths.get(server.name, scenario.path)
        if scenario.websocket:
            return run_ws(server, path, connections, duration, args.ws_bytes, scenario.burst)
        return run_wrk(server, path, connections, duration)

    measures: dict[tuple[str, str], list[Measure]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="strangler-bench-") as temp,
        servers(Path(temp), wanted, websocket) as running,
    ):
        # Warm every server's pools and caches before anything is measured.
        for key in chosen:
            scenario = SCENARIOS[key]
            for name in scenario.servers:
                measure(running[name], scenario, 8, 1)
        for run in range(args.runs):
            for key in chosen:
                scenario = SCENARIOS[key]
                unit = "msg/s" if scenario.websocket else "req/s"
                for name in scenario.servers:
                    m = measure(running[name], scenario, scenario.connections, args.duration)
                    measures.setdefault((key, name), []).append(m)
                    print(
                        f"run {run + 1}/{args.runs} {key:12} {name:13} "
                        f"{m.requests_per_second:10,.0f} {unit}",
                        file=sys.stderr,
                        flush=True,
                    )
        rss = {name: server.peak_rss_kib() for name, server in running.items()}
    print(f"# strangler benchmark: {len(CORES)} cores, {args.runs} runs x {args.duration:g}s\n")
    failed = []
    for key in chosen:
        scenario = SCENARIOS[key]
        results = {name: median(measures[(key, name)]) for name in scenario.servers}
        print("\n".join(report(key, scenario, results, rss, args.ws_bytes)))
        failed += [f"{key} {name}" for name, m in results.items() if m.failed]
    if failed:
        # Every table is printed first: the paths that work are still measured.
        print(f"bench: no WebSocket connection through {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
