"""The Lambda entry point of a service: built on the first invocation, then kept warm."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from new_services.common.http import Event, Response

Service = Callable[[Event, Any], Response]


class EntryPoint:
    """A module-level ``handler`` for Lambda: builds the service (opening its store) on the
    first call, as a cold start does, and reuses it for every later invocation."""

    def __init__(self, build: Callable[[], Service]) -> None:
        self._build = build
        self._service: Service | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Event, context: Any) -> Response:
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = self._build()
        return self._service(event, context)
