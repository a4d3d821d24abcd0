"""Running ASGI apps on uvicorn: several listeners in one event loop, one shutdown.

The gateway serves its public port and its admin port from one process; the demo adds the stub
monolith. Sockets are bound here, before serving, so a port in use is reported plainly and
port 0 can be used (the actual port is then known to the caller). A listener given a TLS
context serves over TLS with it (proxy/tls.py makes and rotates it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass

import uvicorn

from proxy.asgi import ASGIApp
from proxy.connection import HeadGuard, connection_class
from proxy.settings import DEFAULT_DRAIN_TIMEOUT, DEFAULT_SHUTDOWN_GRACE

log = logging.getLogger("strangler")


@dataclass(frozen=True, slots=True)
class Drain:
    """How a stop proceeds: on SIGTERM, ``grace`` seconds during which new requests are still
    accepted (load balancers notice a failing readiness check late), then at most
    ``timeout`` seconds for requests in flight, streams included, before they are cut."""

    grace: float = DEFAULT_SHUTDOWN_GRACE
    timeout: float = DEFAULT_DRAIN_TIMEOUT


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :class:`ServerGroup` (uvicorn's own handlers
    would stop only the last server installed)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(slots=True)
class Listener:
    name: str
    app: ASGIApp
    host: str
    port: int
    sock: socket.socket | None = None
    #: Served by uvicorn's own protocols, WebSockets included, rather than the gateway's: an
    #: ordinary application (the demo's monolith), not a proxy.
    plain: bool = False
    #: Served over TLS with this context (proxy/tls.py), fixed for the listener's life.
    tls: ssl.SSLContext | None = None

    @property
    def bound_port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.bound_port}"


def server_config(
    app: ASGIApp,
    drain_timeout: float,
    guard: HeadGuard | None = None,
    tls: ssl.SSLContext | None = None,
) -> uvicorn.Config:
    """uvicorn settings for a proxy: the gateway's own HTTP/1.1 protocol
    (:mod:`proxy.connection`), nothing added to responses (no Server or Date header), client
    addresses never rewritten from headers; over TLS with ``tls`` when given."""
    config = uvicorn.Config(
        app,
        http=connection_class(guard or HeadGuard()),
        ws="none",
        lifespan="off",
        server_header=False,
        date_header=False,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, math.ceil(drain_timeout)),
    )
    if tls is not None:
        # uvicorn hands `config.ssl` to loop.create_server, and sets it when it loads the
        # config: loaded now, the context made whole by proxy/tls.py (ALPN included) replaces
        # uvicorn's none. (uvicorn 0.47 added `ssl_context_factory` for this; older releases,
        # which the project supports, have only this way.)
        config.load()
        config.ssl = tls
    return config


def plain_config(app: ASGIApp, drain_timeout: float) -> uvicorn.Config:
    """uvicorn settings for an ordinary application: its own protocols and defaults."""
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, math.ceil(drain_timeout)),
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ServerGroup:
    """Listeners served together and stopped together.

    SIGTERM drains: ``on_drain`` runs at once (readiness turns 503), new requests are still
    served for the drain's grace period, then the listeners close and requests in flight get
    the drain's timeout. SIGINT skips the grace period; a second signal stops without waiting,
    a third cuts what is left.
    """

    def __init__(
        self,
        listeners: list[Listener],
        drain: Drain | None = None,
        on_drain: Callable[[], None] | None = None,
        guard: HeadGuard | None = None,
    ) -> None:
        self.listeners = listeners
        self.drain = drain or Drain()
        self.guard = guard or HeadGuard()
        self._on_drain = on_drain
        self._draining = False
        self._servers: list[_Server] = []

    def bind(self) -> None:
        """Bind every listener's socket, or none of them."""
        try:
            for listener in self.listeners:
                listener.sock = bind(listener.host, listener.port)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for listener in self.listeners:
            if listener.sock is not None:
                listener.sock.close()

    async def serve(
        self, *, handle_signals: bool = True, on_started: Callable[[], None] | None = None
    ) -> None:
        """Serve until stopped; ``on_started`` runs once every listener accepts connections
        (and signals are handled), which is when a caller may announce the addresses."""
        if any(listener.sock is None for listener in self.listeners):
            self.bind()
        self._servers = [
            _Server(
                plain_config(listener.app, self.drain.timeout)
                if listener.plain
                else server_config(listener.app, self.drain.timeout, self.guard, listener.tls)
            )
            for listener in self.listeners
        ]
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.begin_drain, self.drain.grace)
            loop.add_signal_handler(signal.SIGINT, self.begin_drain, 0.0)
        try:
            serving = asyncio.gather(
                *(
                    server.serve(sockets=[listener.sock] if listener.sock else None)
                    for server, listener in zip(self._servers, self.listeners, strict=True)
                )
            )
            # uvicorn offers a `started` flag but no event to wait on.
            while not self.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if on_started is not None and self.started:
                on_started()
            await serving
        finally:
            self.close()
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    def begin_drain(self, grace: float) -> None:
        """Stop after ``grace`` seconds of still serving; a second call stops now."""
        if self._draining:
            self.stop()
            return
        self._draining = True
        log.info("draining: not ready any more; stopping in %gs", grace)
        if self._on_drain is not None:
            self._on_drain()
        asyncio.get_running_loop().call_later(grace, self.stop)

    def stop(self) -> None:
        for server in self._servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self._servers) and all(server.started for server in self._servers)
