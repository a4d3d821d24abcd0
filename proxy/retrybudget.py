"""A route's retry budget: retries may add at most ``ratio`` of the route's requests, plus
``min_per_second``, over a sliding ten-second window (Finagle's and Linkerd's model).

Per-request retry counts alone multiply an outage: with ``attempts: 2`` a failing backend
gets three times its traffic exactly when it can least take it. A budget caps the extra load
at a fixed share, however many requests fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.window import SlidingCounts

WINDOW = 10.0


class RetryBudget:
    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        #: (original requests, retries).
        self._counts = SlidingCounts(WINDOW, clock)

    def request(self) -> None:
        """Count an original request (each adds ``ratio`` to what may be retried)."""
        self._counts.add(1, 0)

    def try_retry(self) -> bool:
        """Spend one retry if the budget has one left."""
        requests, retries = self._counts.totals()
        if retries + 1 > self.ratio * requests + self.min_per_second * WINDOW:
            return False
        self._counts.add(0, 1)
        return True

    def window(self) -> tuple[int, int]:
        """(requests, retries) in the last ten seconds."""
        return self._counts.totals()
