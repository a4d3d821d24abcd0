"""Each service's own storage: an SQLite file standing in for its DynamoDB table.

The file lives in ``$STRANGLER_DATA_DIR`` (default: ``strangler-data`` in the system's temp
directory, which is ``/tmp`` on Lambda too). It is created and seeded from ``seed.json`` on
first use. Handlers run on several threads, so each use opens its own connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any


def data_dir() -> Path:
    return Path(
        os.environ.get("STRANGLER_DATA_DIR") or Path(tempfile.gettempdir()) / "strangler-data"
    )


@cache
def seed() -> dict[str, Any]:
    """The monolith's data export (see legacy_monolith.export)."""
    text = resources.files("new_services.common").joinpath("seed.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


class Store:
    """One SQLite file with its schema, seeded once by ``fill``."""

    def __init__(
        self, path: Path, schema: tuple[str, ...], fill: Callable[[sqlite3.Connection], None]
    ) -> None:
        self.path = path
        self._schema = ("CREATE TABLE IF NOT EXISTS seeded (done INTEGER)", *schema)
        self._fill = fill
        self._ready = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        if not self._ready:
            self._prepare()
        with self._transaction() as connection:
            yield connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def _prepare(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._transaction() as connection:
                for statement in self._schema:
                    connection.execute(statement)
                if connection.execute("SELECT count(*) FROM seeded").fetchone()[0] == 0:
                    self._fill(connection)
                    connection.execute("INSERT INTO seeded VALUES (1)")
            self._ready = True
