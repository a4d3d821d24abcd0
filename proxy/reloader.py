"""How a new routing table arrives: validated and compiled whole, then published by one
assignment (docs/reload.md).

Every trigger (the file watcher, SIGHUP, ``POST /reload``) calls :meth:`Reloader.reload`, which
is serialised, reads the file, and does nothing when its bytes are those of the live table. A
bad table is reported (log, metrics, ``/routes``) and the live one keeps serving. Backends whose
settings did not change are carried over with their connections and threads; dropped ones are
closed once the last request on the old table has finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles

from proxy.authorizer import Authorizer
from proxy.backends.base import Backend
from proxy.live import Live, publish
from proxy.metrics import Metrics
from proxy.routes import CompiledTable, compile_table
from proxy.runtime import Runtime
from proxy.table import model
from proxy.table.loader import TableError, digest, parse_table, read_table_bytes
from proxy.table.yamlnodes import Problem
from proxy.timefmt import iso_time

log = logging.getLogger("strangler.reload")

#: A burst of file events (an editor's save, a ConfigMap swap) is taken as one change once the
#: directory has been quiet this long, so a half-written file is not applied.
DEBOUNCE_MS = 300


@dataclass(slots=True)
class ReloadResult:
    changed: bool
    version: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def problem_json(problem: Problem) -> dict[str, Any]:
    where = problem.location
    return {
        "file": where.file,
        "line": where.line,
        "column": where.column,
        "message": problem.message,
    }


class Reloader:
    def __init__(
        self,
        path: str,
        runtime: Runtime,
        metrics: Metrics,
        backend_factory: Callable[[model.Backend], Backend],
    ) -> None:
        self.path = path
        # The directory as named, not resolved: a ConfigMap mounts the table as a symlink
        # into a hidden directory that is replaced on every update.
        self._directory = Path(os.path.dirname(os.path.abspath(path)))
        self._name = os.path.basename(path)
        self._runtime = runtime
        self._metrics = metrics
        self._build_backend = backend_factory
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._rejected_version: str | None = None
        self._rejected_problems: list[Problem] = []

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            return self._reload(trigger)

    def _reload(self, trigger: str) -> ReloadResult:
        live = self._runtime.live
        old = live.table
        try:
            data = read_table_bytes(self.path)
        except TableError as exc:
            return self._rejected(trigger, None, exc.problems)
        version = digest(data)
        if version == old.version:
            return ReloadResult(changed=False, version=old.version)
        if self._rejected_version == version:
            # The same bad bytes again: already reported and counted once.
            return ReloadResult(False, old.version, self._rejected_problems)
        try:
            new = compile_table(
                parse_table(data, self.path), self._carry_over(old), old.authorizers
            )
        except TableError as exc:
            return self._rejected(trigger, version, exc.problems)
        self._rejected_version = None
        # Known good: now, and only now, it becomes what the metrics describe.
        self._runtime.live = publish(new, self._metrics, live)  # the swap
        self._runtime.last_error = None
        log.info(
            "%s: loaded version %s (was %s) on %s", self.path, new.version, old.version, trigger
        )
        kept = {id(backend) for backend in new.backends.values()}
        kept |= {id(authorizer) for authorizer in new.authorizers.values()}
        dropped: list[Backend | Authorizer] = [
            b for b in old.backends.values() if id(b) not in kept
        ]
        dropped += [a for a in old.authorizers.values() if id(a) not in kept]
        if dropped:
            task = asyncio.get_running_loop().create_task(self._close_after(live, dropped))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return ReloadResult(changed=True, version=new.version)

    def _carry_over(self, old: CompiledTable) -> Callable[[model.Backend], Backend]:
        def make(spec: model.Backend) -> Backend:
            current = old.backends.get(spec.name)
            if current is not None and current.spec == spec:
                return current
            return self._build_backend(spec)

        return make

    def _rejected(self, trigger: str, version: str | None, problems: list[Problem]) -> ReloadResult:
        self._rejected_version, self._rejected_problems = version, problems
        self._metrics.table_rejected()
        self._runtime.last_error = {
            "at": iso_time(time.time()),
            "trigger": trigger,
            "errors": [problem_json(p) for p in problems],
        }
        for problem in problems:
            log.error("%s", problem)
        log.error(
            "%s: rejected on %s (%d problems); version %s keeps serving",
            self.path,
            trigger,
            len(problems),
            self._runtime.table.version,
        )
        return ReloadResult(changed=False, version=self._runtime.table.version, problems=problems)

    async def _close_after(self, old: Live, backends: list[Backend | Authorizer]) -> None:
        await old.usage.drained()
        for backend in backends:
            await backend.aclose()

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload on changes in the directory that holds the table: an edit in place, a file
        renamed over it, a Kubernetes ConfigMap's ``..data`` symlink swap. Runs until ``stop``."""
        async for _ in watchfiles.awatch(
            self._directory,
            watch_filter=self._concerns_table,
            debounce=DEBOUNCE_MS,
            step=50,
            stop_event=stop,
            recursive=False,
        ):
            await self.reload("file change")

    def _concerns_table(self, change: watchfiles.Change, path: str) -> bool:
        """Events on the table's own name (edits, renames over it) and on a ConfigMap's
        ``..data`` link; other files in the directory (logs, editors' swap files) are not."""
        name = os.path.basename(path)
        return name == self._name or name.startswith("..data")

    async def aclose(self) -> None:
        for task in list(self._closing):
            await task
