"""Two counts over a sliding time window, kept in ten buckets: what the circuit breaker and
the retry budget judge by. Constant memory and constant work per event."""

from __future__ import annotations

from collections.abc import Callable

BUCKETS = 10


class SlidingCounts:
    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._width = window / BUCKETS
        self._clock = clock
        # Per bucket: [bucket number, first count, second count]; a stale number means empty.
        self._buckets = [[-1, 0, 0] for _ in range(BUCKETS)]

    def add(self, first: int, second: int) -> None:
        number = int(self._clock() // self._width)
        bucket = self._buckets[number % BUCKETS]
        if bucket[0] != number:
            bucket[0], bucket[1], bucket[2] = number, 0, 0
        bucket[1] += first
        bucket[2] += second

    def totals(self) -> tuple[int, int]:
        """Both counts over the buckets of the last window."""
        current = int(self._clock() // self._width)
        first = second = 0
        for number, one, two in self._buckets:
            if 0 <= current - number < BUCKETS:
                first += one
                second += two
        return first, second

    def clear(self) -> None:
        for bucket in self._buckets:
            bucket[0] = -1
