"""Request ids the gateway makes for requests that bring none: unique, and cheap to make.

Each id is a version-4-shaped UUID whose first 74 bits are drawn once per process from the
operating system's random source and whose last 48 bits count the process's requests. Ids are
therefore unique within a process by construction (2^48 requests before the count wraps), and
across processes and replicas unless two draw the same 74 bits. ``uuid.uuid4()`` asks the
operating system for 16 fresh bytes per request, which costs more than the whole of this.
"""

from __future__ import annotations

import os


class RequestIds:
    __slots__ = ("_count", "_prefix")

    def __init__(self, random_bytes: bytes | None = None) -> None:
        seed = int.from_bytes(random_bytes or os.urandom(10), "big") & ((1 << 74) - 1)
        time_low = seed >> 42
        time_mid = (seed >> 26) & 0xFFFF
        high = (seed >> 14) & 0x0FFF
        clock = seed & 0x3FFF
        # The version nibble (4) and the variant bits (10) in their places.
        self._prefix = f"{time_low:08x}-{time_mid:04x}-4{high:03x}-{0x8000 | clock:04x}-"
        self._count = 0

    def next(self) -> str:
        self._count = count = (self._count + 1) & 0xFFFFFFFFFFFF
        return f"{self._prefix}{count:012x}"
