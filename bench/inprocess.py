"""The gateway's own CPU per request, without the kernel: the benchmark's 20-route table served
in process, the client and the upstream replaced by in-memory transports that answer at once.

Every byte still goes through the real code: the HTTP/1.1 connection parses the request, the
gateway routes it, the transport writes the upstream request and parses nginx's response, and
the response is framed for the client. Only the sockets are gone, so the figure is what
strangler costs per request in Python, repeatable to within a few percent on a busy machine
(wrk's figures there move by a quarter). ``make bench`` measures the real thing.

    .venv/bin/python bench/inprocess.py [REQUESTS] [PATH] [json|off] [on|off] > /dev/null

(the last: the inventory of legacy traffic, docs/inventory.md)

The table also has ``/authorized``: the catalog's sticky split behind a Lambda authorizer
whose answers are cached (``ttl: 60s``), so ``PATH=/authorized/items`` against
``/api/catalog/items`` is the cost of an authorizer answered from its cache
(docs/authorizers.md).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import strangler_table
from proxy.app import create_app
from proxy.backends import transport as upstream_transport
from proxy.connection import connection_class
from proxy.server import server_config
from proxy.settings import Settings

#: What nginx answers the benchmark's upstream requests with (100-byte file).
UPSTREAM_REPLY = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\n"
    b"Last-Modified: Tue, 01 Dec 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "674c1a30-64"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 100
)


class _Pipe(asyncio.Transport):
    """A transport that hands what is written to a callback, on the next turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_write: Any) -> None:
        super().__init__()
        self._loop = loop
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._loop.call_soon(self._on_write, bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def main(count: int, path: str, access_log: str, inventory: str = "on") -> None:
    loop = asyncio.get_running_loop()
    directory = Path(tempfile.mkdtemp(prefix="strangler-inprocess-"))
    table = strangler_table(directory, "http://127.0.0.1:9")
    table.write_text(
        table.read_text().replace(
            "routes:\n",
            "authorizers:\n  bench: {function: 'bench.handler:authorize', identity: [cookie:sid],"
            " ttl: 60s, context_headers: {id: X-User-Id}}\nroutes:\n",
        )
        + "  - {name: authorized, match: {path: /authorized, methods: [GET, HEAD]},\n"
        "     split: {catalog: 50, monolith: 50}, sticky: {cookie: sid}, authorizer: bench}\n"
    )
    application = create_app(
        Settings(config=str(table), watch=False, access_log=access_log, inventory=inventory)
    )

    async def connect(self: Any, origin: Any, limit: Any) -> Any:
        connection = upstream_transport._Connection(origin, loop)
        pipe = _Pipe(loop, lambda data: connection.data_received(UPSTREAM_REPLY))
        connection.connection_made(pipe)
        return connection

    upstream_transport.Transport._connect = connect  # type: ignore[method-assign]
    config = server_config(application.public, 30.0)
    config.load()

    class State:
        connections: set[Any] = set()
        tasks: set[Any] = set()
        total_requests = 0
        default_headers: list[Any] = []

    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: sid=bench-user\r\n\r\n"
    ).encode()
    done = asyncio.Event()
    answered = 0
    protocol = connection_class(config.http_protocol_class.guard)(config, State(), {})

    def on_write(data: bytes) -> None:
        nonlocal answered
        answered += 1
        if answered >= count:
            done.set()
        else:
            protocol.data_received(request)

    protocol.connection_made(_Pipe(loop, on_write))
    started, cpu = time.perf_counter(), time.process_time()
    protocol.data_received(request)
    await done.wait()
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    # stderr: stdout is the access log's (send it to /dev/null or a file).
    print(
        f"{count} requests to {path}, access log {access_log}, inventory {inventory}: "
        f"{used / count * 1e6:.1f} µs CPU "
        f"per request ({count / elapsed:,.0f} requests/s on one core, no kernel)",
        file=sys.stderr,
    )
    await application.aclose()


if __name__ == "__main__":
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    target = sys.argv[2] if len(sys.argv) > 2 else "/api/catalog/items"
    log_format = sys.argv[3] if len(sys.argv) > 3 else "json"
    keep = sys.argv[4] if len(sys.argv) > 4 else "on"
    uvloop.run(main(requests, target, log_format, keep))
