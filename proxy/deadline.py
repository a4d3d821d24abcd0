"""A deadline for the request's task: one timer handle that cancels the task when it expires.

``asyncio.timeout()`` does the same with a context manager, a state machine and a task lookup
on every entry, which cost more than the rest of a proxied request's own bookkeeping
(bench/README.md); a request needs one or two deadlines, so each is one ``call_at`` handle.
The code under a deadline catches ``CancelledError`` where it waits and asks :meth:`expired`:
when it is the deadline's doing, :meth:`absorb` takes the cancellation back and the caller
raises its own error (504, 408); otherwise the cancellation is someone else's (the client went
away, the server is stopping) and goes on. Whatever happens, :meth:`cancel` is called once the
work is done, with no ``await`` in between.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Deadline:
    __slots__ = ("_handle", "_task", "expired")

    def __init__(self, task: asyncio.Task[Any], seconds: float) -> None:
        self._task = task
        #: Whether it has fired (the task was cancelled by it).
        self.expired = False
        self._handle = task.get_loop().call_later(seconds, self._fire) if seconds > 0 else None

    def _fire(self) -> None:
        self.expired = True
        self._task.cancel()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def absorb(self) -> None:
        """Take back the cancellation this deadline caused, so the task can go on."""
        self.cancel()
        self._task.uncancel()


class IdleDeadline(Deadline):
    """Cancels the task when :meth:`touch` has not been called for ``seconds``: a stream that
    moved no byte for its idle timeout. One timer, re-armed lazily: a touch is a clock read,
    and the timer, when it fires early, sets itself for the last touch's deadline."""

    __slots__ = ("_last", "_loop", "_seconds")

    def __init__(self, task: asyncio.Task[Any], seconds: float) -> None:
        self._task = task
        self._loop = loop = task.get_loop()
        self._seconds = seconds
        self._last = loop.time()
        self.expired = False
        self._handle = loop.call_at(self._last + seconds, self._fire)

    def touch(self) -> None:
        self._last = self._loop.time()

    def _fire(self) -> None:
        due = self._last + self._seconds
        if self._loop.time() >= due:
            self._handle = None
            self.expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._fire)
