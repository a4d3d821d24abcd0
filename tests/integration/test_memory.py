"""Memory of a real `strangler serve` process: bodies stream through without being held, and
sustained load does not make it grow (RSS from /proc, not timings)."""

from __future__ import annotations

import concurrent.futures
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.asgi import Receive, Scope, Send
from tests.support import LOOPBACK, RawClient, ThreadedServers, serve_process, write_table

pytestmark = pytest.mark.sockets

MiB = 1024 * 1024
RESPONSE_BYTES = 1024 * MiB
UPLOAD_BYTES = 500 * MiB
CHUNK = b"\x5a" * (256 * 1024)
#: What streaming a body may add to the gateway's resident memory, at most.
BOUND = 64 * MiB


async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """GET /big streams 1 GiB; POST /sink reads a body of any size and answers its length;
    anything else answers a small body. Under /new/ (the new service of a fall-through route)
    it reads the body too and answers 404 with ``new:LENGTH``."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/big":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(RESPONSE_BYTES).encode())],
            }
        )
        for _ in range(RESPONSE_BYTES // len(CHUNK)):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    received = 0
    while True:
        message = await receive()
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    new = scope["path"].startswith("/new/")
    body = (b"new:" if new else b"") + str(received).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404 if new else 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as handle:
        match = re.search(rf"{field}:\s+(\d+) kB", handle.read())
    assert match is not None
    return int(match.group(1)) * 1024


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The gateway process's pid and public port, in front of the upstream above."""
    servers = ThreadedServers({"upstream": upstream}).start()
    config = write_table(tmp_path / "routes.yaml", {"up": f"{{url: '{servers.url('upstream')}'}}"})
    process, url, _ = serve_process(config, "--log-level", "warning")
    try:
        yield process.proc.pid, int(url.rsplit(":", 1)[1])
    finally:
        assert process.stop() == 0
        servers.stop()


def warm(port: int) -> None:
    for _ in range(50):
        assert RawClient(port).request(b"GET /small HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200


def test_a_1_gib_response_streams_through_in_bounded_memory(gateway: tuple[int, int]) -> None:
    pid, port = gateway
    warm(port)
    before = rss(pid)
    with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: 1073741824" in head.lower()
        count = len(body)
        buffer = bytearray(1024 * 1024)
        while count < RESPONSE_BYTES:
            read = sock.recv_into(buffer)
            assert read, f"the connection closed after {count} bytes"
            count += read
    assert count == RESPONSE_BYTES
    grown = rss(pid, "VmHWM") - before
    assert grown < BOUND, f"peak RSS grew by {grown / MiB:.1f} MiB"


def upload(port: int) -> bytes:
    """POST 500 MiB to /sink; the response, which ends with the count the upstream read."""
    with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
        sock.sendall(
            b"POST /sink HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES
        )
        for _ in range(UPLOAD_BYTES // len(CHUNK)):
            sock.sendall(CHUNK)
        reply = b""
        while not reply.endswith(str(UPLOAD_BYTES).encode()):
            data = sock.recv(65536)
            assert data, reply
            reply += data
    return reply


def test_a_500_mib_upload_streams_through_in_bounded_memory(gateway: tuple[int, int]) -> None:
    pid, port = gateway
    warm(port)
    before = rss(pid)
    reply = upload(port)
    assert reply.startswith(b"HTTP/1.1 200 ")
    grown = rss(pid, "VmHWM") - before
    assert grown < BOUND, f"peak RSS grew by {grown / MiB:.1f} MiB"


def test_rss_stays_flat_under_sustained_load(gateway: tuple[int, int]) -> None:
    pid, port = gateway

    def client(requests: int) -> int:
        connection = RawClient(port)
        ok = 0
        for _ in range(requests):
            ok += connection.request(b"GET /small HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200
        return ok

    def load(total: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            assert sum(pool.map(client, [total // 16] * 16)) == total

    load(4_000)  # pools, caches and metric children all exist after this
    settled = rss(pid)
    load(16_000)
    grown = rss(pid) - settled
    # Four times the requests again: a per-request leak of even 500 bytes would show.
    assert grown < 4 * MiB, f"RSS grew by {grown / MiB:.1f} MiB over 16,000 requests"


@pytest.fixture
def falling_back(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The same, on a route that falls through to legacy: the new service (under /new/) answers
    404, so request bodies up to max_body are kept whole and sent again to the old one."""
    servers = ThreadedServers({"upstream": upstream}).start()
    url = servers.url("upstream")
    config = write_table(
        tmp_path / "routes.yaml",
        {"up": f"{{url: '{url}/new'}}", "old": f"{{url: '{url}', kind: legacy}}"},
        "  - {name: all, match: {path: /}, backend: up,\n"
        "     fallback: {backend: old, statuses: [404], unsafe_methods: true}}",
    )
    process, gateway_url, _ = serve_process(config, "--log-level", "warning")
    try:
        yield process.proc.pid, int(gateway_url.rsplit(":", 1)[1])
    finally:
        assert process.stop() == 0
        servers.stop()


def test_kept_bodies_cost_at_most_max_body_each_and_larger_ones_stream(
    falling_back: tuple[int, int],
) -> None:
    pid, port = falling_back
    warm(port)
    before = rss(pid)
    body = b"k" * 65536  # exactly max_body: kept whole by every request

    def post(_: int) -> bytes:
        reply = RawClient(port, timeout=60).request(
            b"POST /sink HTTP/1.1\r\nHost: gw\r\nContent-Length: 65536\r\n\r\n" + body
        )
        return reply.body

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        # Every one fell through, and the old service read the whole kept body again.
        assert set(pool.map(post, range(256))) == {b"65536"}
    # 64 in flight at once hold 4 MiB of kept bodies; their copies and buffers stay near it.
    kept = rss(pid, "VmHWM") - before
    assert kept < 16 * MiB, f"peak RSS grew by {kept / MiB:.1f} MiB for 64 kept bodies at once"
    # A body past max_body is never kept: 500 MiB stream through to the new service, whose 404
    # is the answer (nothing could be sent again).
    reply = upload(port)
    assert reply.startswith(b"HTTP/1.1 404 ")
    assert reply.endswith(b"new:%d" % UPLOAD_BYTES)
    grown = rss(pid, "VmHWM") - before
    assert grown < BOUND, f"peak RSS grew by {grown / MiB:.1f} MiB"
