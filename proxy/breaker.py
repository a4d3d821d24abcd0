"""A backend's circuit breaker: closed, open, half-open (docs/resilience.md).

Closed, it counts outcomes over a sliding ``window``; when the window holds at least
``min_requests`` outcomes and the share of failures reaches ``failure_ratio``, it opens.
Open, it refuses every request for ``open_for`` seconds. Then it is half-open: up to ``probes``
requests go through; if all of them succeed it closes with an empty window, and the first
failure opens it again. Outcomes that say nothing about the backend's health (the client went
away, the gateway's own limits) are *neutral*: they count for nothing and free a probe's place.

Pure state, no I/O; the clock is injected so tests can step through every transition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from proxy.table.model import CircuitBreaker as Spec
from proxy.window import SlidingCounts


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        spec: Spec,
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._clock = clock
        #: Called with the new state on every change (set when the state is published).
        self.on_change = on_change
        #: (requests, failures) while closed.
        self._counts = SlidingCounts(spec.window, clock)
        self.state = State.CLOSED
        self._opened_at = 0.0
        self._probing = 0
        self._probes_passed = 0

    def allow(self) -> bool:
        """Whether a request may go to the backend now; when True, exactly one of
        :meth:`success`, :meth:`failure` or :meth:`neutral` must follow."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() - self._opened_at < self.spec.open_for:
                return False
            self._set(State.HALF_OPEN)
            self._probing = self._probes_passed = 0
        if self._probing + self._probes_passed >= self.spec.probes:
            return False
        self._probing += 1
        return True

    def success(self) -> None:
        if self.state is State.HALF_OPEN:
            self._probing -= 1
            self._probes_passed += 1
            if self._probes_passed >= self.spec.probes:
                self._close()
        elif self.state is State.CLOSED:
            self._record(failed=False)

    def failure(self) -> None:
        if self.state is State.HALF_OPEN:
            self._open()
        elif self.state is State.CLOSED:
            requests, failures = self._record(failed=True)
            spec = self.spec
            if requests >= spec.min_requests and failures >= spec.failure_ratio * requests:
                self._open()

    def neutral(self) -> None:
        if self.state is State.HALF_OPEN:
            self._probing -= 1

    def window(self) -> tuple[int, int]:
        """(requests, failures) in the current window while closed."""
        return self._counts.totals()

    def _record(self, failed: bool) -> tuple[int, int]:
        self._counts.add(1, int(failed))
        return self._counts.totals()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probing = self._probes_passed = 0
        self._set(State.OPEN)

    def _close(self) -> None:
        self._counts.clear()
        self._set(State.CLOSED)

    def _set(self, state: State) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
