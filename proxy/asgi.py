"""ASGI type aliases shared by the gateway, the backends and the admin app.

Plain aliases, so the hot path needs no framework types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A header list exactly as ASGI carries it: lower-case names, repeated names kept.
RawHeaders = list[tuple[bytes, bytes]]
