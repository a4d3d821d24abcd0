"""WebSocket tunnels over real sockets (docs/forwarding.md, "Upgrades"): a real WebSocket
client library through the gateway to a real WebSocket server, and raw sockets that show the
handshake and the frames cross byte for byte; refusals, limits, idle ends, reloads and the
drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support import (
    LOOPBACK,
    Exchange,
    RawClient,
    RawUpstream,
    response,
    running_gateway,
    serve_process,
    wait_for,
    write_table,
)

pytestmark = pytest.mark.sockets

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
#: RFC 6455 §1.3's example: the accept value for KEY.
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: chat\r\nOrigin: http://gw\r\n\r\n"
)
#: A masked text frame "Hello" from a client, and an unmasked one from a server (RFC 6455 §5.7).
CLIENT_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")
SERVER_HELLO = bytes.fromhex("810548656c6c6f")
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
)


class EchoServer:
    """A WebSocket server (the ``websockets`` library) in a thread of its own: echoes every
    message, prefixed with its name; ``close:CODE:REASON`` makes it close with that code; it
    records the close code each client sent."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.port = 0
        self.client_close_codes: list[int | None] = []
        self.open = 0
        self._loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, ws: ServerConnection) -> None:
        self.open += 1
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    await ws.close(int(code), reason)
                    return
                if isinstance(message, str):
                    await ws.send(f"{self.name}:{message}")
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.open -= 1
            received = ws.protocol.close_rcvd
            self.client_close_codes.append(received.code if received is not None else None)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = self._loop.create_future()
            async with serve(self._handle, LOOPBACK, 0, compression=None) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self._ready.set()
                await self._stop

        self._loop.run_until_complete(main())

    def start(self) -> EchoServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


def ws(port: int, path: str = "/chat", **options: object) -> ClientConnection:
    return connect(
        f"ws://{LOOPBACK}:{port}{path}",
        compression=None,
        open_timeout=10,
        close_timeout=5,
        **options,  # type: ignore[arg-type]
    )


def metric(admin: str, name: str, **labels: str) -> float | None:
    """One sample's value from the admin /metrics, or None when it is absent."""
    text = httpx.get(f"{admin}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


@contextlib.contextmanager
def gateway(
    tmp_path: Path, backends: dict[str, str], routes: str | None = None
) -> Iterator[tuple[int, str]]:
    config = write_table(tmp_path / "routes.yaml", backends, routes)
    with running_gateway(config) as (_, servers):
        yield servers.port("gateway"), servers.url("admin")


# ---- a real client and a real server ------------------------------------------------------------


def test_a_websocket_client_and_server_talk_through_the_gateway(
    tmp_path: Path, echo: EchoServer
) -> None:
    with gateway(tmp_path, {"ws": f"{{url: '{echo.url}', kind: legacy}}"}) as (port, admin):
        with ws(port) as client:
            client.send("hello")
            assert client.recv(5) == "echo:hello"
            payload = bytes(range(256)) * 4096  # 1 MiB, in one frame
            client.send(payload)
            assert client.recv(10) == payload
            client.ping(b"are you there").wait(5)
            assert metric(admin, "strangler_upgraded_connections", route="all") == 1.0
            client.send("close:4001:going away now")
            with pytest.raises(ConnectionClosed) as closed:
                client.recv(5)
        # The server's close code and reason reached the client exactly.
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "going away now")
        with ws(port) as client:
            client.send("x")
            assert client.recv(5) == "echo:x"
            client.close(4002, "done")
        assert wait_for(lambda: len(echo.client_close_codes) == 2)
        # ...and the client's close codes reached the server: the echo of 4001, then 4002.
        assert echo.client_close_codes == [4001, 4002]
        assert wait_for(lambda: metric(admin, "strangler_upgraded_connections", route="all") == 0.0)
        labels = {"route": "all", "backend": "ws", "kind": "legacy", "method": "GET"}
        # Each handshake is one request, counted as its 101, and its lifetime is not timed.
        assert metric(admin, "strangler_requests_total", code="101", **labels) == 2.0
        count = metric(admin, "strangler_request_duration_seconds_count", route="all")
        assert count in (None, 0.0)


# ---- the bytes on the wire ------------------------------------------------------------------


def test_the_handshake_and_the_frames_cross_byte_for_byte(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def server(exchange: Exchange) -> None:
        # The 101 and the server's first frame in one write; then the client's frames back.
        await exchange.send(SWITCH + SERVER_HELLO)
        got.append(await exchange.reader.readexactly(len(CLIENT_HELLO) * 2))
        await exchange.send(got[-1][::-1])
        await exchange.send(bytes.fromhex("880203e8"))  # close, 1000
        exchange.close()

    upstream = RawUpstream(server).start()
    try:
        with gateway(tmp_path, {"up": f"{{url: '{upstream.url}'}}"}) as (port, _):
            client = RawClient(port)
            # A frame right behind the handshake, before the 101: it waits for the tunnel.
            client.send(HANDSHAKE + CLIENT_HELLO)
            head = client.read_head()
            client.send(CLIENT_HELLO)
            assert client.read_exactly(len(SERVER_HELLO)) == SERVER_HELLO
            assert client.read_exactly(len(CLIENT_HELLO) * 2) == (CLIENT_HELLO * 2)[::-1]
            # The upstream's close (its FIN) is passed on; the client then closes its side.
            assert client.read_until_closed() == bytes.fromhex("880203e8")
            client.close()
    finally:
        upstream.stop()
    assert got == [CLIENT_HELLO * 2]
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    fields = [line.split(b": ", 1) for line in lines[1:]]
    names = [name for name, _ in fields]
    assert names == [
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"x-request-id",
        b"connection",
        b"upgrade",
    ]
    assert dict(fields)[b"sec-websocket-accept"] == ACCEPT
    assert (dict(fields)[b"connection"], dict(fields)[b"upgrade"]) == (b"upgrade", b"websocket")
    (seen,) = upstream.requests
    assert seen.request_line == "GET /chat?room=1 HTTP/1.1"
    assert seen.header("connection") == ["upgrade"]
    assert seen.header("upgrade") == ["websocket"]
    assert seen.header("sec-websocket-key") == [KEY.decode()]
    assert seen.header("sec-websocket-version") == ["13"]
    assert seen.header("sec-websocket-protocol") == ["chat"]
    assert seen.header("origin") == ["http://gw"]
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]


def test_a_handshake_refused_by_the_backend_is_relayed_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    body = b'{"error":"forbidden"}'
    refused = response(
        "403 Forbidden",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        body,
    )

    async def server(exchange: Exchange) -> None:
        await exchange.send(refused)

    upstream = RawUpstream(server).start()
    try:
        with gateway(tmp_path, {"up": f"{{url: '{upstream.url}'}}"}) as (port, admin):
            client = RawClient(port)
            # What follows a handshake is never read as a request, whatever the answer.
            client.send(HANDSHAKE + b"GET /next HTTP/1.1\r\nHost: gw\r\n\r\n")
            reply = client.read_response()
            assert (reply.status, reply.body) == (403, body)
            assert reply.header("connection") == ["close"]
            assert client.read_until_closed() == b""
            assert metric(admin, "strangler_requests_total", code="403") == 1.0
            assert metric(admin, "strangler_upgraded_connections") is None
    finally:
        upstream.stop()
    assert [r.target for r in upstream.requests] == ["/chat?room=1"]


@pytest.mark.parametrize("status", [b"101 Switching Protocols", b"101 OK"])
def test_a_101_to_another_protocol_is_a_502(tmp_path: Path, status: bytes) -> None:
    async def server(exchange: Exchange) -> None:
        await exchange.send(
            b"HTTP/1.1 " + status + b"\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
        )

    upstream = RawUpstream(server).start()
    try:
        with gateway(tmp_path, {"up": f"{{url: '{upstream.url}'}}"}) as (port, _):
            reply = RawClient(port).request(HANDSHAKE)
            assert reply.status == 502
            assert json.loads(reply.body)["error"] == "upstream_unavailable"
    finally:
        upstream.stop()


def test_a_handshake_to_a_function_backend_is_501(tmp_path: Path) -> None:
    with gateway(tmp_path, {"fn": "{function: 'tests.functions:echo'}"}) as (port, admin):
        reply = RawClient(port).request(
            HANDSHAKE.replace(b"Host: gw", b"Host: gw\r\nX-Request-Id: ws-1")
        )
        assert reply.status == 501
        assert json.loads(reply.body) == {
            "error": "upgrade_not_supported",
            "message": "backend 'fn' is a function",
            "request_id": "ws-1",
        }
        assert metric(admin, "strangler_requests_total", backend="fn", code="501") == 1.0


def test_an_h2c_offer_is_served_as_plain_http_without_the_upgrade(tmp_path: Path) -> None:
    async def server(exchange: Exchange) -> None:
        await exchange.send(response(body=b"plain"))

    upstream = RawUpstream(server).start()
    try:
        with gateway(tmp_path, {"up": f"{{url: '{upstream.url}'}}"}) as (port, _):
            client = RawClient(port)
            offer = b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            offer += b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            first = client.request(offer)
            second = client.request(b"GET /again HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert (first.status, first.body, second.status) == (200, b"plain", 200)
    finally:
        upstream.stop()
    seen = upstream.requests[0]
    assert [n for n, _ in seen.headers if n in ("upgrade", "connection", "http2-settings")] == []


# ---- routing applies to the handshake -----------------------------------------------------------


def test_split_and_stickiness_choose_the_backend_of_the_handshake(tmp_path: Path) -> None:
    old, new = EchoServer("old").start(), EchoServer("new").start()
    routes = (
        "  - name: live\n"
        "    match: {path: /}\n"
        "    split: {old: 50, new: 50}\n"
        "    sticky: {cookie: sid, set: true}\n"
    )
    try:
        backends = {"old": f"{{url: '{old.url}'}}", "new": f"{{url: '{new.url}'}}"}
        with gateway(tmp_path, backends, routes) as (port, _):
            with ws(port) as first:
                assert first.response is not None
                cookie = first.response.headers["Set-Cookie"].split(";")[0]
                first.send("who")
                chosen = first.recv(5).split(":")[0]
            answers = set()
            for _ in range(12):
                with ws(port, additional_headers={"Cookie": cookie}) as again:
                    assert again.response is not None
                    assert "Set-Cookie" not in again.response.headers
                    again.send("who")
                    answers.add(again.recv(5).split(":")[0])
            # Twelve handshakes with the cookie: all on the first one's backend (1 in 2048 by
            # chance if stickiness did not apply).
            assert answers == {chosen}
    finally:
        old.stop()
        new.stop()


# ---- limits, idle ends, reloads, drain ----------------------------------------------------------


def test_max_concurrency_counts_open_tunnels(tmp_path: Path, echo: EchoServer) -> None:
    with gateway(tmp_path, {"ws": f"{{url: '{echo.url}', max_concurrency: 2}}"}) as (port, _):
        with ws(port) as one, ws(port) as two:
            with pytest.raises(InvalidStatus) as refused:
                ws(port)
            assert refused.value.response.status_code == 503
            assert json.loads(refused.value.response.body)["error"] == "overloaded"
            one.send("1")
            two.send("2")
            assert (one.recv(5), two.recv(5)) == ("echo:1", "echo:2")
        # Closed tunnels give their slots back.
        assert wait_for(lambda: echo.open == 0)
        with ws(port) as three, ws(port) as four:
            three.send("3")
            four.send("4")
            assert (three.recv(5), four.recv(5)) == ("echo:3", "echo:4")


def test_a_tunnel_idle_for_its_idle_timeout_is_closed(tmp_path: Path, echo: EchoServer) -> None:
    routes = "  - {name: all, match: {path: /}, backend: ws, idle_timeout: 1s}\n"
    with gateway(tmp_path, {"ws": f"{{url: '{echo.url}'}}"}, routes) as (port, admin):
        with ws(port) as busy, ws(port) as quiet:
            # Busy for 2.5 s, twice the idle timeout: each message resets its clock.
            for n in range(10):
                busy.send(str(n))
                assert busy.recv(5) == f"echo:{n}"
                time.sleep(0.25)
            with pytest.raises(ConnectionClosed):
                quiet.recv(5)
            # The gateway ends a quiet tunnel by closing both connections (no close frame:
            # it relays bytes and never forges frames), so the client sees 1006.
            assert quiet.close_code == 1006
            busy.send("still")
            assert busy.recv(5) == "echo:still"
        assert wait_for(lambda: metric(admin, "strangler_upgraded_connections", route="all") == 0.0)


def test_a_reload_keeps_open_tunnels_on_their_backend(tmp_path: Path) -> None:
    old, new = EchoServer("old").start(), EchoServer("new").start()
    try:
        config = write_table(tmp_path / "routes.yaml", {"old": f"{{url: '{old.url}'}}"})
        with running_gateway(config) as (_, servers):
            port = servers.port("gateway")
            with ws(port) as before:
                write_table(config, {"new": f"{{url: '{new.url}'}}"})
                reload = httpx.post(f"{servers.url('admin')}/reload", json={})
                assert reload.status_code == 200
                with ws(port) as after:
                    after.send("a")
                    assert after.recv(5) == "new:a"
                before.send("b")
                assert before.recv(5) == "old:b"
    finally:
        old.stop()
        new.stop()


def test_a_drain_keeps_tunnels_through_grace_and_timeout_then_closes_them(
    tmp_path: Path, echo: EchoServer
) -> None:
    config = write_table(tmp_path / "routes.yaml", {"ws": f"{{url: '{echo.url}'}}"})
    process, gateway_url, _ = serve_process(config, "--shutdown-grace", "1", "--drain-timeout", "2")
    port = int(gateway_url.rsplit(":", 1)[1])
    try:
        with ws(port) as client:
            process.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            # Through the grace period and the drain: the tunnel still carries messages.
            while time.monotonic() - started < 2.0:
                client.send("tick")
                assert client.recv(5) == "echo:tick"
                time.sleep(0.2)
            with pytest.raises(ConnectionClosed):
                ticks_until_closed(client)
            ended = time.monotonic() - started
        assert process.proc.wait(20) == 0
        # Closed at the end of the drain (grace 1 s + drain 2 s), not before.
        assert ended >= 2.5
    finally:
        process.stop()


def ticks_until_closed(client: ClientConnection) -> None:
    while True:
        client.send("tick")
        client.recv(10)
        time.sleep(0.2)


def test_back_pressure_holds_a_fast_sender_behind_a_slow_reader(
    tmp_path: Path, echo: EchoServer
) -> None:
    flood = 64 * 1024 * 1024
    sent = {"up": 0}

    async def server(exchange: Exchange) -> None:
        await exchange.send(SWITCH)
        chunk = b"\x00" * 65536
        while sent["up"] < flood:
            exchange.writer.write(chunk)
            await exchange.writer.drain()  # blocks while the gateway does not read
            sent["up"] += len(chunk)
        exchange.close()

    upstream = RawUpstream(server).start()
    try:
        with gateway(tmp_path, {"up": f"{{url: '{upstream.url}'}}"}) as (port, _):
            client = RawClient(port)
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            client.send(HANDSHAKE)
            client.read_head()
            time.sleep(1.0)
            held = sent["up"]
            # Kernel buffers on both hops and the gateway's own: a few MiB, not 64.
            assert held < 16 * 1024 * 1024
            received = len(client.read_until_closed())
            client.close()
            assert received == flood
    finally:
        upstream.stop()
