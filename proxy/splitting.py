"""Choosing a backend among a route's weighted choices.

Weights are integers in basis points that sum to 10_000; a weight of 0 is never chosen. The
randomness comes in as an argument so tests can fix it.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import Generic, TypeVar

from proxy.table.model import WEIGHT_SCALE

T = TypeVar("T")


class WeightedChoice(Generic[T]):
    """Weighted random choice among ``(item, weight)`` pairs."""

    __slots__ = ("_bounds", "_items", "_single")

    def __init__(self, choices: Sequence[tuple[T, int]]) -> None:
        live = [(item, weight) for item, weight in choices if weight > 0]
        if sum(weight for _, weight in live) != WEIGHT_SCALE:
            raise ValueError("weights must sum to 10000 basis points")
        self._items = tuple(item for item, _ in live)
        bounds: list[int] = []
        total = 0
        for _, weight in live:
            total += weight
            bounds.append(total)
        self._bounds = tuple(bounds)
        self._single = self._items[0] if len(self._items) == 1 else None

    def pick(self, rng: random.Random) -> T:
        if self._single is not None:
            return self._single
        return self._items[bisect_right(self._bounds, rng.randrange(WEIGHT_SCALE))]
