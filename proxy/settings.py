"""Process settings: resolved once at start from flags and environment (docs/reference.md,
"Flags and environment").

Everything here needs a restart to change; what can change live belongs in the routing table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_CONFIG = "config/routes.yaml"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_ADMIN_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
ACCESS_LOG_FORMATS = ("json", "off")
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_HEAD_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    config: str = DEFAULT_CONFIG
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_host: str = DEFAULT_ADMIN_HOST
    admin_port: int = DEFAULT_ADMIN_PORT
    #: Host names the admin port answers to besides localhost, IP addresses and admin_host.
    admin_allowed_hosts: tuple[str, ...] = ()
    workers: int = 1
    log_level: str = "info"
    watch: bool = True
    #: Seconds new requests are still served after SIGTERM, then seconds in-flight ones get.
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    #: Peers whose X-Forwarded-* and Forwarded headers are believed (CIDR blocks).
    trusted_proxies: tuple[str, ...] = ()
    limits: Limits = field(default_factory=lambda: Limits())
    #: Seconds a client has to send a request's line and headers (408 beyond).
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    #: Set in a worker of ``--workers N``: where all workers' metric values are kept, and that
    #: a reload through the admin API must reach the other workers too.
    metrics_dir: str | None = None
    supervised: bool = False
    #: One JSON line per request on stdout (``json``), or none (``off``): docs/observability.md.
    access_log: str = "json"
    #: Where spans go (OTLP over HTTP, ``URL/v1/traces``); None: no spans are made.
    otlp_endpoint: str | None = None
    #: The public port's certificate chain and key (PEM files); None: plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: What legacy backends still serve, by template (docs/inventory.md): ``on`` or ``off``.
    inventory: str = "on"
    #: Request and response headers (lower-case) whose values the inventory's samples never
    #: keep, besides Cookie, Authorization and Set-Cookie.
    redact_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request may carry before the gateway refuses it (docs/security.md)."""

    #: Path and query, in bytes: 414 uri_too_long beyond (NGINX's default buffer is 8 KiB).
    max_uri_bytes: int = 8192
    #: Header fields: 431 headers_too_large beyond (Envoy's default is 100).
    max_headers: int = 100
    #: Names and values of all header fields together: 431 beyond (Envoy's default is 60 KiB).
    max_header_bytes: int = 65536
    #: Seconds a request body may stall between two reads: 408 beyond (NGINX's
    #: client_body_timeout is 60 s).
    body_idle_timeout: float = 30.0


def env_default(name: str, default: str) -> str:
    """The value of ``STRANGLER_<name>`` or ``default``."""
    return os.environ.get(f"STRANGLER_{name}", default)
