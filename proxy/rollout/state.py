"""What the rollout controller keeps between rounds and across restarts (docs/rollout.md,
"State and lock"): per route the step (the weight of ``to``), when it began, the counts then,
whether it was rolled back, and its decisions; the admin source's running totals. One JSON file
beside the table (``routes.yaml.rollout.json``), written by an atomic rename, which the
gateway's ``GET /rollouts`` reads too. The lock (``routes.yaml.rollout.lock``) makes sure one
controller runs per table.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
#: Decisions kept per route (the latest last).
KEPT_DECISIONS = 50


def state_path(table: str | Path) -> Path:
    return Path(f"{table}.rollout.json")


def lock_path(table: str | Path) -> Path:
    """The table's lock (one controller per table, wherever its state is kept)."""
    return Path(f"{table}.rollout.lock")


@dataclass
class RouteState:
    #: The weight of ``to`` this step is at (basis points).
    weight: int
    #: Unix time the controller first saw the route at this weight.
    began_at: float
    #: The counts then (proxy/rollout/sources.py's flat form).
    baseline: dict[str, float] = field(default_factory=dict)
    #: True after a rollback, until a person sets a step's weight again.
    rolled_back: bool = False
    completed: bool = False
    #: {"at", "action", "reason", "from", "to", "evidence"}, the latest last.
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def record(self, decision: dict[str, Any]) -> None:
        self.decisions.append(decision)
        del self.decisions[:-KEPT_DECISIONS]


@dataclass
class State:
    routes: dict[str, RouteState] = field(default_factory=dict)
    #: The admin source's series: key -> [value last read, running total].
    totals: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {
            "version": VERSION,
            "routes": {name: asdict(route) for name, route in self.routes.items()},
            "totals": self.totals,
        }
        return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def load_state(path: Path) -> State:
    """The state at ``path``; an empty one when there is no file. A file that cannot be read
    as a state is an error (ValueError): a controller must not start over by accident."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return State()
    except OSError as exc:
        raise ValueError(f"{path}: not a rollout state file: {exc}") from None
    return parse_state(data, str(path))


def parse_state(data: bytes | None, where: str) -> State:
    """A state from its JSON (None: there is none yet); ValueError when it is not one."""
    if data is None:
        return State()
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{where}: not a rollout state file: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError(f"{where}: not a version {VERSION} rollout state file")
    try:
        routes = {name: RouteState(**route) for name, route in document["routes"].items()}
        return State(routes, {key: list(entry) for key, entry in document["totals"].items()})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: not a rollout state file: {exc}") from None


class LockHeld(Exception):
    """Another controller runs on this table."""


class Lock:
    """An exclusive ``flock`` on the lock file, held for the controller's life; the file says
    which process holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(f"{self.path} is held by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
