"""An authorizer's cache of decisions (docs/authorizers.md, "The cache"): bounded in entries
and in bytes, each entry living for the TTL it was stored with, the least recently used
evicted first.

It knows nothing of what it stores: its owner (proxy/authorizer.py) decides what may be cached
and what a key is made of (the identity values, all of them). Sizes are the owner's estimate of
an entry's bytes plus its key's and a fixed overhead, so that the byte bound holds whatever the
answers look like.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")

Key = tuple[tuple[str, ...], ...]

#: Entries and bytes one authorizer's cache holds at most.
MAX_ENTRIES = 10_000
MAX_BYTES = 8 * 1024 * 1024
#: What an entry costs beyond its key's and its value's bytes (the dictionary slot, the tuple,
#: the objects' headers), rounded up.
ENTRY_OVERHEAD = 256


class DecisionCache(Generic[V]):
    __slots__ = ("_clock", "_entries", "bytes", "max_bytes", "max_entries")

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        #: key -> (value, size, expiry), least recently used first.
        self._entries: OrderedDict[Key, tuple[V, int, float]] = OrderedDict()
        #: The sizes of the entries held.
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> V | None:
        """The value stored under ``key``, unless it has expired (then it is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, size, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            self.bytes -= size
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Key, value: V, size: int, ttl: float) -> None:
        """Keep ``value`` (about ``size`` bytes) for ``ttl`` seconds, evicting the least
        recently used entries past either bound. A value larger than the whole cache is not
        kept."""
        size += ENTRY_OVERHEAD + sum(len(part) for values in key for part in values)
        if ttl <= 0 or size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (value, size, self._clock() + ttl)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.bytes -= evicted
