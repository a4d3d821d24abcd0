"""The benchmark still works: one short run of two scenarios (figures are not judged here;
`make bench` measures, on a quiet machine)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import ROOT, need

pytestmark = pytest.mark.sockets


def test_a_short_benchmark_run_reports_every_server() -> None:
    need("nginx")
    need("wrk")
    result = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--duration",
            "1",
            "--runs",
            "1",
            "--scenarios",
            "100b-32,function-32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(
        r"^\| (\S+) \| ([\d,]+) \|.*\| (\d+) \| ([\d.]+) \| ([\d.]+|-) \|$", result.stdout, re.M
    )
    servers = [(name, int(rate.replace(",", "")), int(errors)) for name, rate, errors, *_ in rows]
    assert [name for name, _, _ in servers] == [
        *("nginx", "aiohttp", "strangler", "strangler-nolog", "strangler-noinv"),
        *("nginx", "aiohttp", "strangler"),
    ]
    assert all(rate > 0 and errors == 0 for _, rate, errors in servers), result.stdout
    for what in (
        r"the access log",
        r"the inventory \(half of the requests reach the legacy backend\)",
    ):
        assert re.search(
            rf"^- {what}: [\d,]+ req/s with it, [\d,]+ without: [\d.]+ of the rate, "
            r"[+-][\d.]+ µs CPU per request$",
            result.stdout,
            re.M,
        ), result.stdout
    # Every server the run started was stopped by process id.
    assert (
        "strangler-bench-"
        not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    )


def test_a_short_benchmark_run_measures_every_websocket_path() -> None:
    """The WebSocket scenarios (bench/ws.py): the client alone, then through each proxy."""
    need("nginx")
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--duration", "1", "--runs", "1", "--scenarios", "ws"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The rows first: a path that opens no connection is still reported, with its errors.
    rows = re.findall(
        r"^\| (\S+) \| ([\d,]+) \|.*\| (\d+) \| ([\d.]+|-) \| ([\d.]+|-) \| ([\d.]+|-) \|$",
        result.stdout,
        re.M,
    )
    servers = [(name, int(rate.replace(",", "")), int(errors)) for name, rate, errors, *_ in rows]
    assert [name for name, _, _ in servers] == ["direct", "nginx", "aiohttp", "strangler"] * 2
    assert re.findall(r"^### .* \(`(ws-[\w-]+)`\)$", result.stdout, re.M) == [
        "ws-32",
        "ws-burst-32",
    ]
    assert result.stdout.count("| server | msg/s |") == 2
    assert all(rate > 0 and errors == 0 for _, rate, errors in servers), result.stdout
    # The client against the echo server is the scale: its own ratio is 1.
    assert [ratio for name, _, _, ratio, _, _ in rows if name == "direct"] == ["1.000"] * 2
    assert result.returncode == 0, result.stderr
    # The echo server and every client were stopped too (the echo server by process id).
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "strangler-bench-" not in left
    assert "bench.ws " not in left
