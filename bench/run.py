"""``make bench``: strangler beside nginx and the best Python proxy, measured in the same run.

Everything runs on loopback ports chosen here and is stopped by process id at the end:

- the upstream: nginx serving a fixed 100-byte or 16 KiB body for any path;
- ``nginx``: nginx 1 worker as a reverse proxy in front of it (the anchor);
- ``aiohttp``: an aiohttp server with a pooled aiohttp client on uvloop, streaming, adding and
  checking nothing (bench/aiohttp_proxy.py): the Python anchor;
- ``strangler``: ``strangler serve`` with a 20-route table, a sticky split, metrics on;
- ``strangler-2w``: the same with ``--workers 2`` (the workers scenario only).

The server under test is pinned to core 0 (two cores for two workers), wrk and the upstream to
the last core, when the machine has more than one. Configurations are run interleaved,
``--runs`` times each, and the median is reported: req/s, p50, p99, CPU microseconds per
request (user + system of the server's processes), peak RSS, and req/s as a ratio to nginx in
the same scenario and to the aiohttp proxy, and p99 / p50 (how much longer the slowest
requests wait than the typical one).
"""

from __future__ import annotations

import argparse
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


SCENARIOS = {
    "100b-32": Scenario(
        "100 B body, 32 connections", "/api/catalog/items", 32, ("nginx", "aiohttp", "strangler")
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


def strangler_table(directory: Path, upstream: str) -> Path:
    """Twenty routes as a migration has them, the measured ones among them: a sticky split
    between two backends (both the upstream) and a function route."""
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
    table = directory / "routes.yaml"
    table.write_text("\n".join(lines) + "\n")
    return table


@contextmanager
def servers(directory: Path, wanted: set[str]) -> Iterator[dict[str, Server]]:
    started: list[subprocess.Popen[bytes]] = []
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
        }}
    }}""",
                SERVER_CORES,
            )
            started.append(process)
            found["nginx"] = Server("nginx", f"http://{LOOPBACK}:{port}", process)
        python = sys.executable
        if "aiohttp" in wanted:
            port = free_port()
            process = subprocess.Popen(
                [python, "-m", "bench.aiohttp_proxy", str(port), upstream],
                cwd=ROOT,
                preexec_fn=pinned(SERVER_CORES),
            )
            started.append(process)
            found["aiohttp"] = Server("aiohttp", f"http://{LOOPBACK}:{port}", process)
        table = strangler_table(directory, upstream)
        for name, workers, cores in (
            ("strangler", 1, SERVER_CORES),
            ("strangler-2w", 2, set(CORES[:2])),
        ):
            if name not in wanted:
                continue
            port = free_port()
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
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                preexec_fn=pinned(cores),
            )
            started.append(process)
            found[name] = Server(name, f"http://{LOOPBACK}:{port}", process)
        for server in found.values():
            wait_until_serving(server.url + "/api/catalog/items")
        yield found
    finally:
        # Proxies first, each gone before the next, the upstream last: nothing still serving
        # meets a closed upstream.
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(
                    signal.SIGTERM if process.args[0] != "nginx" else signal.SIGQUIT
                )
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Measure:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int


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


def median(measures: list[Measure]) -> Measure:
    return Measure(
        statistics.median(m.requests_per_second for m in measures),
        statistics.median(m.p50_ms for m in measures),
        statistics.median(m.p99_ms for m in measures),
        statistics.median(m.cpu_us_per_request for m in measures),
        sum(m.errors for m in measures),
    )


def report(
    key: str,
    scenario: Scenario,
    results: dict[str, Measure],
    rss: dict[str, int],
) -> list[str]:
    anchor = results["nginx"].requests_per_second
    python = results["aiohttp"].requests_per_second if "aiohttp" in results else None
    lines = [
        f"### {scenario.name} (`{key}`)",
        "",
        "| server | req/s | p50 ms | p99 ms | p99/p50 | CPU µs/req | peak RSS MiB | errors "
        "| vs nginx | vs aiohttp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in scenario.servers:
        m = results[name]
        versus_python = f"{m.requests_per_second / python:.2f}" if python else "-"
        lines.append(
            f"| {name} | {m.requests_per_second:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
            f"{m.p99_ms / m.p50_ms:.1f} | {m.cpu_us_per_request:,.0f} | {rss[name] / 1024:.1f} "
            f"| {m.errors} | {m.requests_per_second / anchor:.3f} | {versus_python} |"
        )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per config")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (apt-get install nginx wrk)", file=sys.stderr)
            return 2
    wanted = {name for key in chosen for name in SCENARIOS[key].servers}
    measures: dict[tuple[str, str], list[Measure]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="strangler-bench-") as temp,
        servers(Path(temp), wanted) as running,
    ):
        # Warm every server's pools and caches before anything is measured.
        for key in chosen:
            scenario = SCENARIOS[key]
            for name in scenario.servers:
                run_wrk(running[name], scenario.paths.get(name, scenario.path), 8, 1)
        for run in range(args.runs):
            for key in chosen:
                scenario = SCENARIOS[key]
                for name in scenario.servers:
                    path = scenario.paths.get(name, scenario.path)
                    measure = run_wrk(running[name], path, scenario.connections, args.duration)
                    measures.setdefault((key, name), []).append(measure)
                    print(
                        f"run {run + 1}/{args.runs} {key:12} {name:13} "
                        f"{measure.requests_per_second:10,.0f} req/s",
                        file=sys.stderr,
                        flush=True,
                    )
        rss = {name: server.peak_rss_kib() for name, server in running.items()}
    print(f"# strangler benchmark: {len(CORES)} cores, {args.runs} runs x {args.duration:g}s\n")
    for key in chosen:
        scenario = SCENARIOS[key]
        results = {name: median(measures[(key, name)]) for name in scenario.servers}
        print("\n".join(report(key, scenario, results, rss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
