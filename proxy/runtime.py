"""The live routing table of one process, and whether it is draining.

Readers take ``runtime.live`` once per request and keep that snapshot to the end; a new table
is published by one assignment, so a request never sees half of one table and half of another.
"""

from __future__ import annotations

from typing import Any

from proxy.live import Live
from proxy.routes import CompiledTable


class Runtime:
    def __init__(self, live: Live) -> None:
        self.live = live
        #: Set when the process stops taking new work; /readyz turns 503.
        self.draining = False
        #: The last rejected table's errors (JSON-ready), until a table loads again.
        self.last_error: dict[str, Any] | None = None

    @property
    def table(self) -> CompiledTable:
        return self.live.table
