"""Choosing a backend among a route's weighted choices: at random, or by a sticky key.

Weights are integers in basis points summing to 10_000; a weight of 0 is never chosen.

A sticky key is hashed with the route's name (BLAKE2b, so the same on every process, replica
and restart) into two independent numbers. The first picks the *side*: new when it falls below
the total weight of the route's ``new`` backends, legacy otherwise. The second picks a backend
within that side, in proportion to the side's weights. Raising the new side's total therefore
only moves keys from legacy to new, and lowering it only moves them back; no change of weights
ever bounces a key from new to legacy while the new share grows. Randomness and hashing are
inputs, so tests can assert exact outcomes.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.table.model import WEIGHT_SCALE

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Choice(Generic[T]):
    item: T
    #: Basis points.
    weight: int
    is_new: bool


class _Weighted(Generic[T]):
    """Items laid end to end by weight; ``at(n)`` for ``0 <= n < total``."""

    __slots__ = ("_bounds", "_items", "total")

    def __init__(self, choices: Sequence[Choice[T]]) -> None:
        live = [c for c in choices if c.weight > 0]
        self._items = tuple(c.item for c in live)
        bounds, total = [], 0
        for choice in live:
            total += choice.weight
            bounds.append(total)
        self._bounds = tuple(bounds)
        self.total = total

    def at(self, point: int) -> T:
        return self._items[bisect_right(self._bounds, point)]


def key_points(route: str, key: str) -> tuple[int, int]:
    """Two independent, stable numbers for a sticky key: the side point in [0, 10000) and a
    64-bit number for the choice within the side."""
    digest = hashlib.blake2b(f"{route}\0{key}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") % WEIGHT_SCALE, int.from_bytes(digest[8:], "big")


class Split(Generic[T]):
    """A route's weighted choice of backend."""

    __slots__ = ("_all", "_legacy", "_new", "_route", "_single")

    def __init__(self, route: str, choices: Sequence[Choice[T]]) -> None:
        if sum(c.weight for c in choices) != WEIGHT_SCALE:
            raise ValueError("weights must sum to 10000 basis points")
        self._route = route
        self._all = _Weighted(choices)
        self._new = _Weighted([c for c in choices if c.is_new])
        self._legacy = _Weighted([c for c in choices if not c.is_new])
        live = [c.item for c in choices if c.weight > 0]
        self._single = live[0] if len(live) == 1 else None

    def pick(self, rng: random.Random) -> T:
        """A backend at random by weight, for requests without a sticky key."""
        if self._single is not None:
            return self._single
        return self._all.at(rng.randrange(WEIGHT_SCALE))

    def pick_for_key(self, key: str) -> T:
        """The backend a sticky key lands on (see the module's docstring for the rule)."""
        if self._single is not None:
            return self._single
        side_point, within = key_points(self._route, key)
        side = self._new if side_point < self._new.total else self._legacy
        return side.at(within % side.total)
