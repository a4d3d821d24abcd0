"""``serve --workers N``: a supervisor process and N worker processes on shared sockets.

The supervisor validates the table (and the TLS pair), binds the public and admin sockets
once, and starts each worker as a fresh ``strangler serve`` that inherits both sockets (the
kernel spreads connections between them); each worker makes its own TLS context from the files.
It prints the banner when every worker is serving, forwards SIGTERM, SIGINT and SIGHUP to all
of them, restarts a worker that dies, and exits when they have all drained.

Metrics use Prometheus's multiprocess mode: each worker writes its values to files in a
directory the supervisor owns (``PROMETHEUS_MULTIPROC_DIR``), and whichever worker answers a
scrape reports the sum. A dead worker's live gauges are removed; its counters stay, so totals
never go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from prometheus_client import multiprocess

from proxy.server import bind

log = logging.getLogger("strangler.workers")

#: Set in a worker's environment: the inherited file descriptors of the public socket, the
#: admin socket and the pipe it reports readiness on.
WORKER_FDS = "STRANGLER_WORKER_FDS"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: How long every worker together may take to load the table and start serving.
START_TIMEOUT = 60.0
#: A worker that dies sooner than this after starting is not restarted in a loop: the
#: supervisor gives up, since the next one would most likely die the same way.
MIN_LIFETIME = 5.0


@dataclass(slots=True)
class WorkerSockets:
    """What a worker inherits from its supervisor."""

    public: socket.socket
    admin: socket.socket
    ready_fd: int

    @classmethod
    def from_environment(cls) -> WorkerSockets | None:
        value = os.environ.get(WORKER_FDS)
        if not value:
            return None
        public, admin, ready = (int(part) for part in value.split(","))
        return cls(socket.socket(fileno=public), socket.socket(fileno=admin), ready)

    def report_ready(self) -> None:
        # A restarted worker's supervisor is no longer listening: nothing to tell.
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"r")
        os.close(self.ready_fd)


async def watch_supervisor(on_orphaned: Callable[[], None]) -> None:
    """Run in a worker: calls ``on_orphaned`` (the drain) once its supervisor has died, when
    the worker has been re-parented and nobody else would stop it."""
    parent = os.getppid()
    # Polling: nothing signals a re-parenting (PR_SET_PDEATHSIG is not reachable from Python).
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone; draining", parent)
    on_orphaned()


@dataclass(slots=True)
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready: int
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        public: tuple[str, int],
        admin: tuple[str, int],
        announce: Callable[[str, str], None],
        tls: bool = False,
    ) -> None:
        self.count = count
        # The worker's command: this same `serve`, one process, whatever the flags said.
        self._command = [sys.executable, "-m", "proxy", *argv, "--workers", "1"]
        self._public_address = public
        self._admin_address = admin
        self._announce = announce
        #: The public port is served over TLS (by each worker, from the files): its URL says so.
        self._public_scheme = "https" if tls else "http"
        self._workers: dict[int, _Worker] = {}
        self._signals: list[int] = []
        self._stopping = False
        self._owned_dir: str | None = None

    def run(self) -> int:
        try:
            public = bind(*self._public_address)
            admin = bind(*self._admin_address)
        except OSError as exc:
            print(f"strangler: cannot listen: {exc}", file=sys.stderr)
            return 1
        directory = self._metrics_directory()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            for index in range(self.count):
                self._start(index, public, admin, directory)
            if not self._wait_ready():
                self._forward(signal.SIGTERM)
                self._reap_all(directory)
                return 1
            self._announce(_url(public, self._public_scheme), _url(admin))
            return self._supervise(public, admin, directory)
        finally:
            public.close()
            admin.close()
            if self._owned_dir is not None:
                shutil.rmtree(self._owned_dir, ignore_errors=True)

    def _metrics_directory(self) -> str:
        """The user's PROMETHEUS_MULTIPROC_DIR, emptied (stale files would add old values), or
        a private one removed at exit."""
        directory = os.environ.get(MULTIPROC_DIR)
        if directory:
            os.makedirs(directory, exist_ok=True)
            for name in os.listdir(directory):
                if name.endswith(".db"):
                    os.unlink(os.path.join(directory, name))
            return directory
        self._owned_dir = tempfile.mkdtemp(prefix="strangler-metrics-")
        return self._owned_dir

    def _start(
        self, index: int, public: socket.socket, admin: socket.socket, directory: str
    ) -> _Worker:
        read_end, write_end = os.pipe()
        fds = (public.fileno(), admin.fileno(), write_end)
        env = {
            **os.environ,
            MULTIPROC_DIR: directory,
            WORKER_FDS: ",".join(str(fd) for fd in fds),
        }
        process = subprocess.Popen(
            self._command,
            env=env,
            pass_fds=fds,
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which forwards
            # it once (a second SIGINT would make a worker stop without draining).
            start_new_session=True,
        )
        os.close(write_end)
        worker = self._workers[process.pid] = _Worker(index, process, read_end)
        return worker

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = {worker.ready: worker for worker in self._workers.values()}
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                return False
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(list(waiting), [], [], min(remaining, 0.2))
                for fd in readable:
                    os.read(fd, 1)
                    os.close(fd)
                    del waiting[fd]
            if any(w.process.poll() is not None for w in waiting.values()):
                print("strangler: a worker failed to start", file=sys.stderr)
                return False
        return True

    def _supervise(self, public: socket.socket, admin: socket.socket, directory: str) -> int:
        failed = False
        while self._workers:
            while self._signals:
                self._forward(self._signals.pop(0))
            for pid, worker in list(self._workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                del self._workers[pid]
                _mark_dead(pid, directory)
                if self._stopping:
                    # Killed by the very signal passed on: it had not set up its handlers
                    # yet, so it had not served anything either.
                    failed = failed or code not in (0, -signal.SIGTERM, -signal.SIGINT)
                    continue
                lived = time.monotonic() - worker.started_at
                log.error("worker %d (pid %d) exited with %d", worker.index, pid, code)
                if lived < MIN_LIFETIME:
                    print(
                        f"strangler: worker {worker.index} died {lived:.1f}s after starting; "
                        "stopping",
                        file=sys.stderr,
                    )
                    self._stopping = True
                    self._forward(signal.SIGTERM)
                    failed = True
                    continue
                # Nobody waits for a replacement to be ready: the others serve meanwhile.
                os.close(self._start(worker.index, public, admin, directory).ready)
            time.sleep(0.05)
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self._stopping = True
        self._signals.append(signum)

    def _forward(self, signum: int) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def _reap_all(self, directory: str) -> None:
        for pid, worker in list(self._workers.items()):
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            _mark_dead(pid, directory)
        self._workers.clear()


def _mark_dead(pid: int, directory: str) -> None:
    """Remove a dead worker's live gauges (in flight, weights, reload state)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"
