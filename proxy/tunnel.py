"""An upgraded connection (a WebSocket after its ``101 Switching Protocols``): bytes both
ways between the client's connection and the upstream's, until either side ends it.

The tunnel sits below ASGI, on the two connections' transports: each is handed a protocol of
the tunnel's (``set_protocol``), so the bytes a side sends are written to the other as they
arrive, unparsed. Frames, their masking, extensions and close codes are the client's and the
upstream's own, byte for byte (docs/forwarding.md, "Upgrades"); the gateway holds no frame.

Memory is bounded both ways by the transports' own flow control: when one side's write buffer
passes its high-water mark (its peer reads slower than the other side sends), reading from the
other side pauses until it drains. A side that closes its write half has that passed on
(``write_eof``), and the tunnel ends when both have, or when either connection is lost, or
when nothing moved either way for the idle timeout (0: never). Ending closes both connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: The two sides, as indexes, and their names (who ended a tunnel).
CLIENT, UPSTREAM = 0, 1
_SIDES = ("client", "upstream")


class Tunnel:
    """One upgraded connection; :attr:`closed` is done once both sides are closed."""

    __slots__ = (
        "_early",
        "_ends",
        "_idle",
        "_last",
        "_loop",
        "_timer",
        "closed",
        "ended_by",
        "moved",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout: float) -> None:
        self._loop = loop
        self._idle = idle_timeout
        self._ends: list[_End] = [None, None]  # type: ignore[list-item]
        self._early = [b"", b""]
        self._last = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        #: Bytes moved from the client to the upstream and from the upstream to the client.
        self.moved = [0, 0]
        #: Why it ended: "client", "upstream" (that side closed or was lost), "idle", or
        #: "gateway" (the gateway closed it: the drain ended, or the request was cancelled).
        self.ended_by = ""

    def attach(
        self,
        side: int,
        transport: asyncio.Transport,
        early: bytes = b"",
        write_paused: bool = False,
        on_lost: Callable[[Exception | None], None] | None = None,
    ) -> None:
        """Take over ``side``'s transport. ``early`` is what that side sent after its head and
        before the tunnel (it goes to the other side first); ``write_paused`` whether its
        writing is paused now (a transport says so only when it changes); ``on_lost(exc)``
        runs when its connection is lost, for its server's bookkeeping."""
        end = _End(self, side, transport, write_paused, on_lost)
        self._ends[side] = end
        self._early[side] = early
        transport.set_protocol(end)

    def start(self) -> None:
        """Both sides attached: the early bytes cross, reading resumes (it was paused while
        they waited), and the idle timer starts."""
        ends = self._ends
        for end in ends:
            if ends[1 - end.side].write_paused:
                end.pause_reading()
            else:
                end.resume_reading()
        for side, early in enumerate(self._early):
            if early:
                self.forward(side, early)
        self._early = [b"", b""]
        for end in ends:
            if end.transport.is_closing():
                self.end(_SIDES[end.side])
                return
        if self._idle > 0:
            self._timer = self._loop.call_later(self._idle, self._watch)

    # -- called by the ends -------------------------------------------------------------------

    def forward(self, side: int, data: bytes) -> None:
        """Bytes from ``side``, to the other side."""
        other = self._ends[1 - side]
        self.moved[side] += len(data)
        self._last = self._loop.time()
        if not other.transport.is_closing():
            other.transport.write(data)

    def eof(self, side: int) -> bool:
        """``side`` closed its write half: the other side's is closed too, if its transport
        can (plain TCP); else the tunnel ends. Whether ``side``'s transport stays open."""
        ends = self._ends
        ends[side].eof = True
        other = ends[1 - side]
        if other.eof:
            self.end(_SIDES[side])
            return False
        if not other.transport.can_write_eof() or other.transport.is_closing():
            self.end(_SIDES[side])
            return False
        other.transport.write_eof()
        return True

    def write_paused(self, side: int, paused: bool) -> None:
        """``side``'s peer reads slower than the other side sends: stop reading the other side
        until ``side``'s buffer drains."""
        other = self._ends[1 - side]
        if paused:
            other.pause_reading()
        else:
            other.resume_reading()

    def lost(self, side: int) -> None:
        self.end(_SIDES[side])

    # -- the end --------------------------------------------------------------------------------

    def _watch(self) -> None:
        self._timer = None
        if self.closed.done():
            return
        quiet_until = self._last + self._idle
        now = self._loop.time()
        if now >= quiet_until:
            self.end("idle")
        else:
            # Lazily re-armed: bytes moving cost a clock read, not a timer each.
            self._timer = self._loop.call_at(quiet_until, self._watch)

    def end(self, by: str = "gateway") -> None:
        """Close both sides (what either was sending is flushed first)."""
        if self.closed.done():
            return
        self.ended_by = self.ended_by or by
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for end in self._ends:
            end.transport.close()
        self.closed.set_result(None)


class _End(asyncio.Protocol):
    """One side's transport as the tunnel's: its callbacks, told to the tunnel by side."""

    __slots__ = ("_on_lost", "_reading", "eof", "side", "transport", "tunnel", "write_paused")

    def __init__(
        self,
        tunnel: Tunnel,
        side: int,
        transport: asyncio.Transport,
        write_paused: bool,
        on_lost: Callable[[Exception | None], None] | None,
    ) -> None:
        self.tunnel = tunnel
        self.side = side
        self.transport = transport
        self.write_paused = write_paused
        self.eof = False
        self._reading: bool | None = None
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self.tunnel.forward(self.side, data)

    def eof_received(self) -> bool:
        return self.tunnel.eof(self.side)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost(self.side)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.tunnel.write_paused(self.side, True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.tunnel.write_paused(self.side, False)

    def pause_reading(self) -> None:
        if self._reading is not False and not self.transport.is_closing():
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading is not True and not self.transport.is_closing():
            self._reading = True
            self.transport.resume_reading()
