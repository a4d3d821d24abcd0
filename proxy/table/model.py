"""The routing table as plain, immutable data.

These dataclasses are what the loader produces from YAML and what the compiler reads. They hold
validated values only (durations in seconds, weights in basis points, methods upper-case) and
know nothing about YAML, HTTP or matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

#: Weights are kept in basis points: 100% is 10_000, the smallest step 0.01% is 1.
WEIGHT_SCALE = 10_000

DEFAULT_TIMEOUT = 30.0
#: When ``idle_timeout`` is left out: an upgraded connection (a WebSocket tunnel) may be quiet
#: for this long, a streamed response between its bytes for this long (docs/forwarding.md).
DEFAULT_TUNNEL_IDLE_TIMEOUT = 300.0
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 2.0
#: Requests in flight to one HTTP upstream; beyond it, 503 at once, so that one hung upstream
#: cannot hold every connection and task of the gateway.
DEFAULT_URL_CONCURRENCY = 512
DEFAULT_FUNCTION_CONCURRENCY = 64
DEFAULT_LAMBDA_CONCURRENCY = 1
#: An upstream's response head: fields, and bytes of names and values (Envoy's defaults are
#: 100 fields and 60 KiB; NGINX's proxy buffer holds 4 or 8 KiB).
DEFAULT_MAX_RESPONSE_HEADERS = 100
DEFAULT_MAX_RESPONSE_HEADER_BYTES = 64 * 1024


class Kind(StrEnum):
    LEGACY = "legacy"
    NEW = "new"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value stands in the file, 1-based, for messages."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """When a backend is taken out of service (docs/resilience.md)."""

    #: Failures / requests in ``window`` at or above which the circuit opens.
    failure_ratio: float = 0.5
    #: Requests in ``window`` below which the ratio is not judged.
    min_requests: int = 20
    window: float = 10.0
    #: Seconds the circuit stays open before it lets probes through.
    open_for: float = 30.0
    #: Probe requests that must all succeed, while half-open, to close it.
    probes: int = 1


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    kind: Kind
    #: Exactly one of these three is set.
    url: str | None
    function: str | None
    lambda_url: str | None
    #: The whole exchange (up to the 101 for an upgrade); 0: no limit (docs/forwarding.md).
    timeout: float
    connect_timeout: float
    max_concurrency: int | None
    #: Not part of equality: a backend whose settings are unchanged is the same backend
    #: wherever it moved in the file (a reload keeps it, connections and all).
    location: Location = field(compare=False)
    circuit_breaker: CircuitBreaker | None = None
    #: url and lambda backends: the largest response head accepted (502 beyond).
    max_response_headers: int = DEFAULT_MAX_RESPONSE_HEADERS
    max_response_header_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES
    #: How long a stream or a tunnel may move no byte; None: the defaults above; 0: no limit.
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Match:
    #: The configured path, already normalised like a request path.
    path: str
    methods: frozenset[str] | None
    #: Lower-case; either an exact name or ``*.suffix``.
    host: str | None
    #: Lower-case header name -> exact value.
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sticky:
    cookie: str | None
    #: Lower-case.
    header: str | None
    set_cookie: bool


#: Failures a route's ``retries.retry_on`` may name: the connection could not be made (the request
#: never left), the connection broke after the request was sent, the backend's timeout.
RETRY_CONDITIONS = ("connect_failure", "reset", "timeout")


@dataclass(frozen=True, slots=True)
class Retries:
    #: Further attempts after the first.
    attempts: int
    on: frozenset[str]
    #: Upstream statuses that count as a failure worth another attempt.
    statuses: frozenset[int]
    #: Retries allowed per original request over the budget's window ...
    budget_ratio: float
    #: ... plus this many per second whatever the traffic (so a quiet route may still retry).
    budget_min_per_second: float


#: Methods that must not change anything (RFC 9110 §9.2.1): what a shadow mirrors by default.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Methods that may be sent again whatever happened to the first attempt (RFC 9110 §9.2.2):
#: what retries and fallbacks may repeat.
IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE", "TRACE"}


@dataclass(frozen=True, slots=True)
class HeaderMap:
    """A route's ``request_headers`` or ``response_headers``: names lower-case, values as
    bytes; applied in the order remove, set, add (docs/routing.md)."""

    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` with the map applied: a name in ``remove`` or ``set`` loses every value
        it had, then ``set`` and ``add`` are appended."""
        drop = self.remove | {name for name, _ in self.set}
        out = [(n, v) for n, v in headers if n not in drop] if drop else headers
        return [*out, *self.set, *self.add]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What a route's url backends get as the path (docs/routing.md, "Rewriting paths"):
    exactly one of ``prefix`` (the route's literal prefix replaced) and ``path`` (a template
    of the route's captures)."""

    prefix: str | None
    path: str | None


@dataclass(frozen=True, slots=True)
class Shadow:
    """Mirror a share of a route's requests to ``backend`` and compare the answers."""

    backend: str
    #: Basis points of the route's (eligible) requests.
    percent: int
    methods: frozenset[str]
    #: Lower-case names of the response headers compared (others are not).
    headers: tuple[str, ...]
    #: JSON paths whose differences do not count (``$.generated_at``, ``$.items[*].id``).
    ignore: tuple[str, ...]
    #: Learn noise as Diffy does: ask the primary twice and ignore what differs between its
    #: own two answers.
    learn_noise: bool
    #: Largest request or response body mirrored and compared, in bytes.
    max_body: int
    #: The mirror's own deadline, in seconds.
    timeout: float
    #: Whether mismatch records keep query values (else only the parameters' names).
    record_query: bool = False


@dataclass(frozen=True, slots=True)
class Rollout:
    """A route's progressive rollout (docs/rollout.md): ``to``, the new backend being ramped,
    goes through ``steps`` (basis points, ascending) while its gates hold; the controller
    (``strangler rollout``) judges and writes the weights, the gateway only shows them."""

    to: str
    steps: tuple[int, ...]
    #: The least time at a step, in seconds, before it may be promoted.
    every: float
    min_requests: int
    max_error_ratio: float
    max_error_ratio_vs_legacy: float
    max_p99_vs_legacy: float | None
    min_shadow_parity: float | None
    #: ``rollback`` (``to`` back to 0%) or ``hold`` (stay, and say why).
    on_failure: str

    def step_of(self, weight: int) -> int:
        """The index in ``steps`` of ``to``'s weight, or -1 when it is none of them (0)."""
        return self.steps.index(weight) if weight in self.steps else -1


#: An authorizer's call, when the table does not say: as Traefik's ForwardAuth has none, the
#: gateway's own default is short, so that a stuck authorizer fails fast (docs/authorizers.md).
DEFAULT_AUTHORIZER_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class IdentitySource:
    """One value that identifies the caller: a cookie's or a request header's."""

    #: ``cookie`` or ``header``.
    source: str
    #: The cookie's name as written, or the header's name lower-case.
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True, slots=True)
class Authorizer:
    """Who decides whether a route's request may go on, and with which identity
    (docs/authorizers.md). Exactly one of ``url``, ``function`` and ``lambda_url`` is set."""

    name: str
    url: str | None
    function: str | None
    lambda_url: str | None
    identity: tuple[IdentitySource, ...]
    #: Seconds an answer is cached; 0: never cached.
    ttl: float
    timeout: float
    #: url authorizers: the request headers sent along (lower-case).
    forward_headers: tuple[bytes, ...]
    #: url authorizers: the answer's headers copied onto every backend request (lower-case).
    upstream_headers: tuple[bytes, ...]
    #: function and lambda authorizers: context key -> request header (lower-case).
    context_headers: tuple[tuple[str, bytes], ...]
    location: Location = field(compare=False)

    @property
    def identity_headers(self) -> frozenset[bytes]:
        """The request headers that carry the identity to backends: whatever a client sends
        under these names is removed on every route with this authorizer."""
        return frozenset(self.upstream_headers) | {name for _, name in self.context_headers}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match
    #: (backend name, weight in basis points); a plain ``backend:`` is one entry of 10_000.
    split: tuple[tuple[str, int], ...]
    sticky: Sticky | None
    #: Position in the file, the last tie-breaker between equally specific routes.
    index: int
    location: Location
    #: The backend that answers when the chosen one fails before responding (docs/resilience.md).
    fallback: str | None = None
    #: Upstream statuses that also send the request to the fallback (idempotent methods only).
    fallback_statuses: frozenset[int] = frozenset()
    retries: Retries | None = None
    shadow: Shadow | None = None
    #: The route's own ``timeout`` and ``idle_timeout``, which win over its backends'; None:
    #: the backend's.
    timeout: float | None = None
    idle_timeout: float | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderMap | None = None
    response_headers: HeaderMap | None = None
    #: A request body of at most this many bytes is kept to send again (fallback, retries).
    resend_body: int = 65536
    #: Whether a request whose method is not idempotent may fall back (its body kept).
    fallback_unsafe_methods: bool = False
    #: The authorizer asked before a backend is chosen, and whether a request it does not
    #: allow (or that carries no identity) goes on unauthenticated.
    authorizer: str | None = None
    authorizer_optional: bool = False
    rollout: Rollout | None = None


@dataclass(frozen=True, slots=True)
class Table:
    version: int
    #: Read-only (a ``MappingProxyType``), in file order.
    backends: Mapping[str, Backend]
    routes: tuple[Route, ...]
    #: The file it came from and the hash of its bytes (the table's version string).
    source: str
    digest: str
    #: Read-only, in file order.
    authorizers: Mapping[str, Authorizer] = field(default_factory=dict)
