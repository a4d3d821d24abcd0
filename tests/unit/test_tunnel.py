"""The tunnel (proxy/tunnel.py) between two real socket pairs, in-process: bytes both ways in
order, the bytes that arrived before it first, half-close passed on, the ends it has, and
back-pressure that stops reading a fast sender."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from proxy.tunnel import CLIENT, UPSTREAM, Tunnel

pytestmark = pytest.mark.anyio


class _Holder(asyncio.Protocol):
    """The protocol a transport has before the tunnel takes it."""


@dataclass
class Peers:
    """The client and the upstream as programs see them (plain sockets), and the tunnel
    between the gateway's ends of both."""

    client: socket.socket
    upstream: socket.socket
    tunnel: Tunnel
    transports: tuple[asyncio.Transport, asyncio.Transport]

    async def send(self, sock: socket.socket, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(sock, data)

    async def read(self, sock: socket.socket, count: int) -> bytes:
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < count:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, count - len(data)), 5)
            if not chunk:
                break
            data += chunk
        return data

    async def eof(self, sock: socket.socket) -> bool:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1), 5) == b""


async def _transport(sock: socket.socket) -> asyncio.Transport:
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(_Holder, sock)
    return transport


async def open_tunnel(
    idle: float = 0.0, client_early: bytes = b"", upstream_early: bytes = b""
) -> Peers:
    client, client_end = socket.socketpair()
    upstream, upstream_end = socket.socketpair()
    for sock in (client, upstream):
        sock.setblocking(False)
    transports = (await _transport(client_end), await _transport(upstream_end))
    tunnel = Tunnel(asyncio.get_running_loop(), idle)
    tunnel.attach(CLIENT, transports[0], client_early)
    tunnel.attach(UPSTREAM, transports[1], upstream_early)
    tunnel.start()
    return Peers(client, upstream, tunnel, transports)


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    opened = await open_tunnel()
    yield opened
    opened.tunnel.end()
    opened.client.close()
    opened.upstream.close()


async def test_bytes_cross_both_ways_in_order(peers: Peers) -> None:
    await peers.send(peers.client, b"\x81\x85masked")
    await peers.send(peers.upstream, b"\x81\x05hello")
    assert await peers.read(peers.upstream, 8) == b"\x81\x85masked"
    assert await peers.read(peers.client, 7) == b"\x81\x05hello"
    assert peers.tunnel.moved == [8, 7]


async def test_the_bytes_each_side_sent_early_go_first() -> None:
    peers = await open_tunnel(client_early=b"first-up ", upstream_early=b"first-down ")
    try:
        await peers.send(peers.client, b"then-up")
        await peers.send(peers.upstream, b"then-down")
        assert await peers.read(peers.upstream, 16) == b"first-up then-up"
        assert await peers.read(peers.client, 20) == b"first-down then-down"
    finally:
        peers.tunnel.end()


async def test_a_half_close_is_passed_on_and_the_other_way_keeps_working(peers: Peers) -> None:
    peers.client.shutdown(socket.SHUT_WR)
    assert await peers.eof(peers.upstream)
    assert not peers.tunnel.closed.done()
    await peers.send(peers.upstream, b"still talking")
    assert await peers.read(peers.client, 13) == b"still talking"
    # The other half closes too: the tunnel is over.
    peers.upstream.shutdown(socket.SHUT_WR)
    await asyncio.wait_for(peers.tunnel.closed, 5)
    assert peers.tunnel.ended_by == "upstream"


async def test_a_reset_side_ends_the_tunnel_and_closes_the_other(peers: Peers) -> None:
    peers.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await peers.send(peers.client, b"unread")
    await asyncio.sleep(0.05)
    peers.upstream.close()  # with unread bytes and no linger: a reset
    await asyncio.wait_for(peers.tunnel.closed, 5)
    assert peers.tunnel.ended_by == "upstream"
    assert await peers.eof(peers.client)


async def test_a_closed_side_is_an_end_of_its_half(peers: Peers) -> None:
    # A close and a half-close look the same from here: the other side learns of it, and
    # the tunnel ends when it closes too (a WebSocket client does, after the close frame).
    peers.upstream.close()
    assert await peers.eof(peers.client)
    await asyncio.sleep(0.05)
    assert not peers.tunnel.closed.done()  # only that half has ended
    peers.client.close()
    await asyncio.wait_for(peers.tunnel.closed, 5)
    assert peers.tunnel.ended_by == "client"


async def test_ending_it_closes_both_sides(peers: Peers) -> None:
    peers.tunnel.end()
    assert peers.tunnel.ended_by == "gateway"
    assert await peers.eof(peers.client)
    assert await peers.eof(peers.upstream)


async def test_a_quiet_tunnel_ends_after_its_idle_timeout_and_a_busy_one_does_not() -> None:
    quiet, busy = await open_tunnel(idle=0.5), await open_tunnel(idle=0.5)
    try:
        for _ in range(12):  # 1.2 s of traffic, every 0.1 s
            await busy.send(busy.client, b"x")
            assert await busy.read(busy.upstream, 1) == b"x"
            await asyncio.sleep(0.1)
        assert quiet.tunnel.closed.done()
        assert quiet.tunnel.ended_by == "idle"
        assert await quiet.eof(quiet.client)
        assert not busy.tunnel.closed.done()
    finally:
        quiet.tunnel.end()
        busy.tunnel.end()


async def test_a_slow_reader_stops_the_reading_of_a_fast_sender(peers: Peers) -> None:
    loop = asyncio.get_running_loop()
    upstream_end = peers.transports[1]
    flood = 16 * 1024 * 1024

    async def send_all() -> None:
        await loop.sock_sendall(peers.upstream, b"\0" * flood)

    sender = loop.create_task(send_all())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not upstream_end.is_reading():
            break
    # The client reads nothing: the gateway stops reading the upstream, and the upstream's
    # send is held by the kernel's buffers instead of the gateway's memory.
    assert not upstream_end.is_reading()
    assert peers.transports[0].get_write_buffer_size() < 1024 * 1024
    assert not sender.done()
    received = await peers.read(peers.client, flood)
    await asyncio.wait_for(sender, 5)
    assert len(received) == flood
    assert upstream_end.is_reading()
