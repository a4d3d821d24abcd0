"""The benchmark's WebSocket case: an echo upstream and a load client, in one module.

``serve PORT`` runs the upstream: a raw WebSocket echo server on an asyncio protocol (uvloop),
not the ``websockets`` library's server. It parses the handshake and the frames itself and
answers every data frame with the same frame unmasked, a whole read's answers in one write: it
does the least a WebSocket server can, so that it shares the load client's core without being
what the figures measure. Anything but a WebSocket handshake is answered ``426`` and closed.

``load URI`` runs the client (the ``websockets`` library's asyncio client, on uvloop): it opens
``--connections`` connections (the handshakes are not timed), prints ``ready``, then on every
connection sends ``--burst`` text messages of ``--bytes`` bytes and waits for all their echoes,
over and over for ``--duration`` seconds, and prints one JSON line: round trips per second, the
p50 and p99 round-trip latency (from a message's send to its echo), and errors (a wrong echo, a
connection refused or lost). ``--burst 1`` is lock-step: send one, wait for it.

Run by bench/run.py as ``python -m bench.ws serve PORT`` and ``python -m bench.ws load URI``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import cast

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

try:
    # The C helper the websockets library unmasks with; the plain-Python fallback is as right.
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        size = len(data)
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


LOOPBACK = "127.0.0.1"
#: How long after the deadline a connection may still wait for its echoes before it counts as
#: stalled: a path that loses a message must not hang the benchmark.
STALL_GRACE = 10.0
#: RFC 6455 §1.3: the accept key is the SHA-1 of the client's key and this GUID.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
#: A head longer than this is no handshake the client sends.
_MAX_HEAD = 16 * 1024


def _frame_head(first: int, size: int) -> bytes:
    """A server frame's head (never masked): ``first`` is FIN, RSV and opcode as received."""
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


class _Echo(asyncio.Protocol):
    """One client connection: the handshake, then frames echoed as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    # The client is paused while its echoes are not leaving, so a client that stops reading
    # cannot grow this server's buffers without bound.
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        # Concatenate only when a frame was cut across reads: the usual read holds whole frames.
        data = self.pending + data if self.pending else data
        self.pending = b""
        if not self.open:
            data = self._handshake(data)
            if not data:
                return
        self._frames(data)

    def _handshake(self, data: bytes) -> bytes:
        """Answer the handshake once its head is in; returns what followed the head."""
        assert self.transport is not None
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEAD:
                self.transport.close()
            else:
                self.pending = data
            return b""
        headers: dict[bytes, bytes] = {}
        for line in data[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        if key is None or headers.get(b"upgrade", b"").lower() != b"websocket":
            # A request the gateway sent on without its upgrade offer, or a probe.
            self.transport.write(
                b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.transport.close()
            return b""
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.open = True
        return data[end + 4 :]

    def _frames(self, data: bytes) -> None:
        assert self.transport is not None
        out: list[bytes] = []
        at, length, closing = 0, len(data), False
        while length - at >= 2:
            first, second = data[at], data[at + 1]
            size, head = second & 0x7F, at + 2
            if size == 126:
                if length - head < 2:
                    break
                size, head = int.from_bytes(data[head : head + 2], "big"), head + 2
            elif size == 127:
                if length - head < 8:
                    break
                size, head = int.from_bytes(data[head : head + 8], "big"), head + 8
            masked = second & 0x80
            body = head + 4 if masked else head
            if length - body < size:
                break
            payload = data[body : body + size]
            if masked:
                payload = apply_mask(payload, data[head:body])
            at = body + size
            opcode = first & 0x0F
            if opcode == _PING:
                out += (_frame_head(0x80 | _PONG, size), payload)
            elif opcode == _PONG:
                pass
            else:
                # Data frames (text, binary, continuation) go back as they came, fragments
                # included; a close is answered with the same code, then the connection ends.
                out += (_frame_head(first, size), payload)
                if opcode == _CLOSE:
                    closing = True
                    break
        if out:
            self.transport.write(b"".join(out))
        if closing:
            self.transport.close()
        elif at < length:
            self.pending = data[at:]


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, LOOPBACK, port, backlog=1024)
    async with server:
        await server.serve_forever()


@dataclass
class Result:
    """What ``load`` prints: ``failed`` is the first reason a connection could not open."""

    messages: int
    seconds: float
    messages_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    connections: int
    failed: str | None


async def _drive(
    socket: ClientConnection, payload: str, burst: int, deadline: int, latencies: list[int]
) -> int:
    """Round trips on one connection until ``deadline``, their latencies (ns) appended to
    ``latencies`` as they come (a stalled connection's are kept); returns the errors."""
    clock = time.perf_counter_ns
    errors = 0
    sent = [0] * burst
    try:
        while clock() < deadline:
            for i in range(burst):
                sent[i] = clock()
                await socket.send(payload)
            for i in range(burst):
                # Echoes come back in order on one connection: the i-th is the i-th sent.
                reply = await socket.recv()
                latencies.append(clock() - sent[i])
                if reply != payload:
                    errors += 1
    except ConnectionClosed:
        errors += 1
    return errors


def _percentile(ordered: list[int], fraction: float) -> float:
    """In ms; 0 when there is nothing to rank (no round trip made it)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1e6


async def load(uri: str, connections: int, size: int, burst: int, duration: float) -> Result:
    opened = await asyncio.gather(
        *(
            # No compression (none of the paths would do it on the wire the same way), no
            # keep-alive pings (they would be round trips not counted), no size limit.
            connect(uri, compression=None, ping_interval=None, max_size=None, open_timeout=10)
            for _ in range(connections)
        ),
        return_exceptions=True,
    )
    sockets = [s for s in opened if isinstance(s, ClientConnection)]
    refused = [s for s in opened if not isinstance(s, ClientConnection)]
    failed = f"{type(refused[0]).__name__}: {refused[0]}" if refused else None
    # The caller reads its CPU counters now: what follows is the measured part.
    print("ready", flush=True)
    payload = "x" * size
    start = time.perf_counter_ns()
    latencies: list[int] = []
    # No timeout around each recv (that would cost the client more than the message): one
    # watchdog for the lot, after which a connection still waiting is a stall, one error.
    drives = [
        asyncio.ensure_future(_drive(s, payload, burst, start + int(duration * 1e9), latencies))
        for s in sockets
    ]
    done, stalled = (
        await asyncio.wait(drives, timeout=duration + STALL_GRACE) if drives else ((), ())
    )
    seconds = (time.perf_counter_ns() - start) / 1e9
    for drive in stalled:
        drive.cancel()
    latencies.sort()
    result = Result(
        messages=len(latencies),
        seconds=seconds,
        messages_per_second=len(latencies) / seconds if seconds else 0.0,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        errors=len(refused) + len(stalled) + sum(drive.result() for drive in done),
        connections=connections,
        failed=failed,
    )
    print(json.dumps(asdict(result)), flush=True)
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="the echo upstream")
    server.add_argument("port", type=int)
    client = commands.add_parser("load", help="the load client")
    client.add_argument("uri", help="ws://host:port/path")
    client.add_argument("--connections", type=int, default=32)
    client.add_argument("--bytes", type=int, default=100, help="bytes per text message")
    client.add_argument("--burst", type=int, default=1, help="messages sent before waiting")
    client.add_argument("--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    if args.command == "serve":
        uvloop.run(serve(args.port))
    else:
        result = uvloop.run(load(args.uri, args.connections, args.bytes, args.burst, args.duration))
        sys.exit(1 if result.failed else 0)


if __name__ == "__main__":
    main()
