"""The live routing table of one process.

Readers take ``runtime.table`` once per request and keep that snapshot to the end; a new table
is published by one assignment, so a request never sees half of one table and half of another.
"""

from __future__ import annotations

from typing import Any

from proxy.table.compile import CompiledTable


class Runtime:
    def __init__(self, table: CompiledTable) -> None:
        self.table = table
        #: Set when the process stops taking new work; /readyz turns 503.
        self.draining = False
        #: The last rejected table's errors (JSON-ready), until a table loads again.
        self.last_error: dict[str, Any] | None = None
