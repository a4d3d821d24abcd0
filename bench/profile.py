"""Where strangler's CPU goes under load: py-spy (``--native``) samples one `strangler serve`
for five seconds while wrk drives the benchmark's 100-byte scenario, then the samples are
grouped by the innermost frame that says what the work was.

    .venv/bin/python bench/profile.py [PATH [CONNECTIONS]]   (py-spy: the dev extra)

Uses bench/run.py's servers (nginx upstream, strangler with its 20-route table).
"""

from __future__ import annotations

import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run

#: (substring of a frame, category), the first that matches the innermost Python frame wins.
CATEGORIES = (
    ("httpx/", "httpx Request/Response/Headers objects"),
    ("prometheus_client", "metrics"),
    ("proxy/metrics.py", "metrics"),
    ("uvicorn/", "uvicorn protocol and ASGI cycle"),
    ("proxy/backends/transport.py", "the transport"),
    ("proxy/backends/http.py", "the url backend"),
    ("proxy/gateway.py", "the gateway's request path"),
    ("proxy/headers.py", "header rewriting"),
    ("proxy/matching.py", "matching"),
    ("proxy/splitting.py", "splitting"),
    ("proxy/connection.py", "the HTTP/1.1 connection"),
    ("proxy/cycle.py", "the HTTP/1.1 connection"),
    ("asyncio/", "asyncio timeouts, tasks, futures"),
    ("uuid.py", "request ids"),
)


def classify(frames: list[str]) -> str:
    leaf = frames[-1]
    if any(frame.startswith("gc_collect") for frame in frames):
        return "garbage collection"
    for prefix, name in (
        ("write", "write/send system calls"),
        ("send", "write/send system calls"),
        ("getpid", "getpid system calls"),
        ("read", "read/epoll system calls"),
        ("recv", "read/epoll system calls"),
        ("epoll", "read/epoll system calls"),
    ):
        if leaf.startswith(prefix):
            return name
    python = [frame for frame in frames if ".py:" in frame]
    if not python:
        return "event loop (native)"
    for key, name in CATEGORIES:
        if key in python[-1]:
            return name
    return "other"


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/api/catalog/items"
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as temp:
        samples = Path(temp) / "samples.txt"
        with run.servers(Path(temp), {"strangler"}) as running:
            server = running["strangler"]
            run.run_wrk(server, path, 8, 1)
            wrk = subprocess.Popen(
                [
                    "wrk",
                    "-t2",
                    f"-c{connections}",
                    "-d8s",
                    "-H",
                    "Cookie: sid=bench-user",
                    server.url + path,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                time.sleep(1)
                subprocess.run(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(server.process.pid),
                        "-d",
                        "5",
                        "-r",
                        "200",
                        "--native",
                        "--format",
                        "raw",
                        "-o",
                        str(samples),
                    ],
                    check=True,
                    capture_output=True,
                )
                print(next(line for line in wrk.communicate()[0].splitlines() if "/sec" in line))
            finally:
                if wrk.poll() is None:
                    wrk.kill()
                    wrk.wait()
        shares: collections.Counter[str] = collections.Counter()
        for line in samples.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            shares[classify(stack.split(";"))] += int(count)
    total = sum(shares.values())
    for name, count in shares.most_common():
        print(f"{100 * count / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
