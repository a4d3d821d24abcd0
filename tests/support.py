"""Real servers on loopback for tests: the gateway in a thread, a scriptable raw upstream, and
a raw-socket HTTP client that shows exactly what crossed the wire.

Everything binds 127.0.0.1 on a port the kernel picks, and is stopped by the test that
started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvloop

from proxy.app import Application, create_app
from proxy.asgi import ASGIApp
from proxy.server import Listener, ServerGroup
from proxy.settings import Settings

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


class ThreadedServers:
    """A :class:`ServerGroup` run on its own event loop in a background thread."""

    def __init__(
        self,
        apps: dict[str, ASGIApp],
        on_stop: Callable[[], Awaitable[None]] | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ):
        self.listeners = {name: Listener(name, app, LOOPBACK, 0) for name, app in apps.items()}
        self.group = ServerGroup(list(self.listeners.values()))
        self._on_stop = on_stop
        self._on_start = on_start
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            if self._on_start is not None:
                await self._on_start()
            try:
                await self.group.serve(handle_signals=False)
            finally:
                if self._on_stop is not None:
                    await self._on_stop()

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def start(self) -> ThreadedServers:
        self.group.bind()
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.group.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"servers did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def tasks(self) -> int:
        """How many tasks the servers' event loop holds right now."""
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(5)

    def port(self, name: str) -> int:
        return self.listeners[name].bound_port

    def url(self, name: str) -> str:
        return self.listeners[name].url

    def stop(self) -> None:
        self.group.stop()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "servers did not stop"
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def running_gateway(
    config: Path, **settings: object
) -> Iterator[tuple[Application, ThreadedServers]]:
    application = create_app(Settings(config=str(config), **settings))  # type: ignore[arg-type]
    servers = ThreadedServers(
        {"gateway": application.public, "admin": application.admin},
        on_stop=application.aclose,
        on_start=application.start,
    ).start()
    try:
        yield application, servers
    finally:
        servers.stop()


def write_table(path: Path, backends: dict[str, str], routes: str | None = None) -> Path:
    """A routing table with the given ``name: yaml-mapping`` backends; by default one route
    ``/`` to the first backend."""
    lines = ["version: 1", "backends:"]
    lines += [f"  {name}: {spec}" for name, spec in backends.items()]
    lines.append("routes:")
    lines.append(
        routes or f"  - {{name: all, match: {{path: /}}, backend: {next(iter(backends))}}}"
    )
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- a scriptable raw upstream ---------------------------------------------------------------


class _Head:
    """Header access for a message head (start line and header lines, without the blank line)."""

    head: bytes

    @property
    def headers(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [
            (n.strip().lower(), v.strip())
            for n, v in (line.split(":", 1) for line in lines if line)
        ]

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


@dataclass
class Recorded(_Head):
    """One request as the upstream read it off the wire."""

    head: bytes
    body: bytes
    connection: int

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        return self.request_line.split(" ")[1]


@dataclass
class Exchange:
    """What a script sees of the current request, and how it answers."""

    request: Recorded
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.writer.transport.abort()


Script = Callable[[Exchange], Awaitable[None]]


def response(
    status: str = "200 OK", headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    for name, value in headers if headers is not None else [("Content-Length", str(len(body)))]:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer(data: bytes) -> Script:
    async def script(exchange: Exchange) -> None:
        await exchange.send(data)

    return script


@dataclass
class RawUpstream:
    """An HTTP/1.1 upstream that records requests byte for byte and answers with a script.

    The script decides everything: framing, timing, resets. Requests are read with
    Content-Length or chunked framing; keep-alive is honoured while the script leaves the
    connection open.
    """

    script: Script
    requests: list[Recorded] = field(default_factory=list)
    connections: int = 0
    closed_connections: int = 0
    #: Set by the loop when a connection the upstream was serving is closed by the peer.
    peer_closed: threading.Event = field(default_factory=threading.Event)
    #: Progress while a request is still arriving: request heads read, chunked body bytes read.
    heads_received: int = 0
    body_bytes_received: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            # A generous line limit: tests send heads as large as the gateway accepts.
            self._server = await asyncio.start_server(self._serve, LOOPBACK, 0, limit=1024 * 1024)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def start(self) -> RawUpstream:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # its selector and self-pipe: fds a long run would run out of

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                recorded = await self._read_request(reader, number)
                if recorded is None:
                    self.peer_closed.set()
                    return
                self.requests.append(recorded)
                await self.script(Exchange(recorded, reader, writer))
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.peer_closed.set()
        finally:
            self.closed_connections += 1
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, connection: int) -> Recorded | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        recorded = Recorded(head[:-4], b"", connection)
        self.heads_received += 1
        length = recorded.header("content-length")
        if length:
            recorded.body = await reader.readexactly(int(length[0]))
        elif any(v.lower() == "chunked" for v in recorded.header("transfer-encoding")):
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                chunks.append(await reader.readexactly(size))
                self.body_bytes_received += size
                await reader.readexactly(2)
                if size == 0:
                    break
            recorded.body = b"".join(chunks)
        return recorded


# ---- a raw-socket client ------------------------------------------------------------------------


@dataclass
class RawResponse(_Head):
    status: int
    head: bytes
    body: bytes


class RawClient:
    """One client connection; sends bytes as given and parses responses by their framing."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self._buffer += data
        return bool(data)

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"closed before the head ended: {self._buffer!r}")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        return head

    def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self._buffer)} of {count} bytes")
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def read_until_closed(self) -> bytes:
        while self._fill():
            pass
        data, self._buffer = self._buffer, b""
        return data

    def read_response(self, method: str = "GET") -> RawResponse:
        head = self.read_head()
        status = int(head.split(b" ", 2)[1])
        parsed = RawResponse(status, head, b"")
        if method == "HEAD" or status in (204, 304) or status < 200:
            return parsed
        length = parsed.header("content-length")
        if length:
            parsed.body = self.read_exactly(int(length[0]))
        elif "chunked" in ",".join(parsed.header("transfer-encoding")):
            chunks = []
            while True:
                line = self._read_line()
                size = int(line.split(b";")[0], 16)
                chunks.append(self.read_exactly(size))
                self.read_exactly(2)
                if size == 0:
                    break
            parsed.body = b"".join(chunks)
        else:
            parsed.body = self.read_until_closed()
        return parsed

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError("closed mid-line")
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def request(self, data: bytes, method: str = "GET") -> RawResponse:
        self.send(data)
        return self.read_response(method)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---- subprocesses ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A long-running subprocess whose output (stdout and stderr together) is read line by
    line as it comes, by a thread of its own, so that a process writing a lot (its access
    log) never blocks on a full pipe; stopped by pid."""

    def __init__(
        self, args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._read = 0  # lines wait_for_line has looked at
        self._more = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._more:
                self.lines.append(line)
                self._more.notify_all()
        with self._more:
            self._ended = True
            self._more.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first line after those already looked at that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        with self._more:
            while True:
                while self._read < len(self.lines):
                    line = self.lines[self._read]
                    self._read += 1
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    break
                self._more.wait(left)
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")

    def output(self) -> str:
        """Everything the process wrote, once it has ended."""
        self._reader.join(10)
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def need(binary: str) -> str:
    """The path of a Debian-packaged tool a test drives. `.ci/run` installs them, so under CI
    a missing one fails the test; elsewhere the test is skipped with the package to install."""
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (.ci/run installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def prometheus_process(
    directory: Path, targets: list[str], rules: Path | None = None
) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping ``targets`` (host:port) every second,
    evaluating ``rules`` when given, its data in ``directory``: its URL, once it is ready.
    Stopped by its pid at the end."""
    binary = need("prometheus")
    port = free_port()
    config = directory / "prometheus.yml"
    listed = ", ".join(f"'{target}'" for target in targets)
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        + (f"rule_files: ['{rules}']\n" if rules is not None else "")
        + "scrape_configs:\n"
        "  - job_name: strangler\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{LOOPBACK}:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(ready, timeout=30), "prometheus did not become ready"
        yield url
    finally:
        process.terminate()
        process.wait(20)


def serve_process(
    config: Path, *flags: str, env: dict[str, str] | None = None
) -> tuple[Process, str, str]:
    """`strangler serve` on loopback with kernel-chosen ports: the process, and the gateway's
    and the admin port's URLs as its banner announces them."""
    process = Process(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "-c",
            str(config),
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--admin-port",
            "0",
            # No grace period unless a test asks for one: most stop their server at once.
            "--shutdown-grace",
            "0",
            *flags,
        ],
        env=env,
    )
    gateway = process.wait_for_line(r"gateway\s+(http://\S+)").group(1)
    admin = process.wait_for_line(r"admin\s+(http://\S+)").group(1)
    return process, gateway, admin


@dataclass(frozen=True)
class DemoPorts:
    """Where a test's `strangler demo` runs its two plain servers: the monolith and the
    reviews service (config/routes.yaml has them on 8081 and 8082)."""

    monolith: int
    reviews: int

    @classmethod
    def free(cls) -> DemoPorts:
        return cls(free_port(), free_port())


def shipped_table(directory: Path, ports: DemoPorts) -> Path:
    """config/routes.yaml, as shipped but for its monolith's and reviews service's ports."""
    config = directory / "routes.yaml"
    text = (ROOT / "config" / "routes.yaml").read_text()
    for shipped, port in ((8081, ports.monolith), (8082, ports.reviews)):
        text = text.replace(f"http://127.0.0.1:{shipped}", f"http://127.0.0.1:{port}")
    config.write_text(text)
    return config


def demo_process(config: Path, ports: DemoPorts, data_dir: Path) -> tuple[Process, str, str]:
    """`strangler demo` with ``config`` (its monolith and reviews service on ``ports``), the
    gateway and the admin port on ports the kernel picks, the function services' state in
    ``data_dir``: the process, and the gateway's and the admin port's URLs as its banner
    announces them. Stop it with SIGINT (Ctrl-C)."""
    process = Process(
        [
            sys.executable,
            "-m",
            "proxy",
            "demo",
            "-c",
            str(config),
            "--port",
            "0",
            "--admin-port",
            "0",
            "--monolith-port",
            str(ports.monolith),
            "--reviews-port",
            str(ports.reviews),
        ],
        # The function services keep their state here, not in the shared temp directory.
        env={"STRANGLER_DATA_DIR": str(data_dir)},
    )
    gateway = process.wait_for_line(r"gateway\s+(http://\S+)").group(1)
    admin = process.wait_for_line(r"admin\s+(http://\S+)/routes").group(1)
    return process, gateway, admin
