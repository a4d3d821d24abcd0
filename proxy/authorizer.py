"""Authorizers at run time (docs/authorizers.md): read a request's identity, ask the authorizer
or its cache, and say what the route's backends get.

One :class:`Authorizer` per authorizer of the table (kept across reloads while its settings
are unchanged, cache and all). :meth:`Authorizer.decide` is the one call the gateway makes:

- a request without every identity value is ``unauthenticated``, and nothing is called;
- the cache key is every identity value (each header or cookie with all its values, in
  order), so two callers that differ in any one never share an answer;
- a call runs as a task of its own: concurrent requests with the same identity wait for the
  same call when the cache is on (single flight), and the answer is cached when it lands, even
  if every waiting client went away;
- only allows and 401/403 denials are cached; a failure (refused, timed out, nonsense) is
  :class:`~proxy.errors.AuthorizerUnavailable` and never an allow.

The call itself goes through the backend kinds the table already has (proxy/backends/): a
``url`` authorizer is an HTTP backend asked with ``GET`` (ForwardAuth's request), a
``function`` or ``lambda`` authorizer a function invoked with the authorizer event
(proxy/backends/lambda_payload.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.asgi import RawHeaders
from proxy.authcache import DecisionCache, Key
from proxy.backends.base import Answer, Backend, ProxyRequest
from proxy.backends.lambda_payload import build_authorizer_event, parse_authorizer_result
from proxy.errors import AuthorizerUnavailable, Forbidden, GatewayError
from proxy.headers import client_response_headers, cookie_values, header_values
from proxy.table import model

#: The most of an authorizer's answer body the gateway reads (its identity context, or the
#: denial it relays); a larger one is a failure.
MAX_ANSWER_BODY = 64 * 1024
#: Request headers the gateway itself sets that a url authorizer also gets.
_FROM_GATEWAY = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"traceparent",
    }
)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Allow:
    """The caller may go on: these headers go to every backend, and the context to function
    backends as ``requestContext.authorizer.lambda``."""

    headers: tuple[tuple[bytes, bytes], ...]
    context: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Deny:
    """The caller may not: a url authorizer's own answer (relayed as it was sent, but for its
    framing and X-Request-Id, which are the gateway's), or the gateway's ``error``."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    error: GatewayError | None = None

    @property
    def cacheable(self) -> bool:
        return self.status in (401, 403)


Outcome = Allow | Deny


class AuthorizerMetrics(Protocol):
    def result(self, result: str) -> None: ...

    def observe(self, seconds: float) -> None: ...


class _Unbound:
    """Metrics of an authorizer not published for serving (``strangler explain``)."""

    def result(self, result: str) -> None:
        pass

    def observe(self, seconds: float) -> None:
        pass


class Caller(Protocol):
    async def ask(self, request: ProxyRequest, client: RawHeaders, identity: list[str]) -> Outcome:
        """The authorizer's answer for ``request`` (its task is the call's own), or
        AuthorizerUnavailable."""

    async def aclose(self) -> None: ...


def backend_spec(spec: model.Authorizer) -> model.Backend:
    """The backend an authorizer is called through: its target, its timeout, the defaults of
    its kind otherwise."""
    if spec.url is not None:
        concurrency = model.DEFAULT_URL_CONCURRENCY
    elif spec.function is not None:
        concurrency = model.DEFAULT_FUNCTION_CONCURRENCY
    else:
        concurrency = model.DEFAULT_LAMBDA_CONCURRENCY
    return model.Backend(
        name=f"authorizer {spec.name}",
        kind=model.Kind.NEW,
        # The origin only: the caller asks for the URL's own path, exactly as written.
        url=_split_url(spec.url)[0] if spec.url is not None else None,
        function=spec.function,
        lambda_url=spec.lambda_url,
        timeout=spec.timeout,
        connect_timeout=min(model.DEFAULT_CONNECT_TIMEOUT, spec.timeout),
        max_concurrency=concurrency,
        location=spec.location,
    )


class Authorizer:
    """One authorizer of the table, with its cache and its calls in flight."""

    def __init__(self, spec: model.Authorizer, backend: Backend) -> None:
        self.spec = spec
        self.name = spec.name
        #: Whatever a client sends under these names never reaches a backend of its routes.
        self.identity_headers = spec.identity_headers
        self._caller: Caller = (
            UrlCaller(spec, backend) if spec.url is not None else FunctionCaller(spec, backend)
        )
        self._sources = tuple(
            (source.source == "cookie", source.name.encode("latin-1")) for source in spec.identity
        )
        self._cache: DecisionCache[Outcome] = DecisionCache()
        self._flights: dict[Key, asyncio.Task[Outcome]] = {}
        self.metrics: AuthorizerMetrics = _Unbound()

    def identity_of(self, headers: RawHeaders) -> Key | None:
        """Every value of each identity source, in order, or None when one is missing."""
        key: list[tuple[str, ...]] = []
        for is_cookie, name in self._sources:
            found = cookie_values(headers, name) if is_cookie else header_values(headers, name)
            if not found:
                return None
            key.append(found)
        return tuple(key)

    async def decide(self, request: ProxyRequest, client: RawHeaders) -> tuple[str, Outcome | None]:
        """The result counted for ``request`` and what it gets (None: it carries no identity).
        ``client`` is the request's headers as the client sent them."""
        key = self.identity_of(client)
        if key is None:
            self.metrics.result("unauthenticated")
            return "unauthenticated", None
        caching = self.spec.ttl > 0
        if caching:
            hit = self._cache.get(key)
            if hit is not None:
                self.metrics.result("cached")
                return "cached", hit
        flight = self._flights.get(key) if caching else None
        shared = flight is not None
        if flight is None:
            flight = request.task.get_loop().create_task(self._call(request, client, key))
            if caching:
                self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done, caching))
        try:
            # Shielded: a client that goes away leaves the call to the others waiting on it
            # (and to the cache).
            outcome = await asyncio.shield(flight)
        except AuthorizerUnavailable:
            self.metrics.result("error")
            raise
        except asyncio.CancelledError:
            if not caching:
                flight.cancel()  # nobody else wants its answer
            raise
        result = "cached" if shared else "allow" if isinstance(outcome, Allow) else "deny"
        self.metrics.result(result)
        return result, outcome

    async def _call(self, request: ProxyRequest, client: RawHeaders, key: Key) -> Outcome:
        task = asyncio.current_task()
        assert task is not None
        ask = dataclasses.replace(
            request, body=None, task=task, upgrade=None, timeout=None, idle_timeout=None
        )
        started = time.perf_counter()
        try:
            return await self._caller.ask(ask, client, [", ".join(values) for values in key])
        finally:
            self.metrics.observe(time.perf_counter() - started)

    def _landed(self, key: Key, done: asyncio.Task[Outcome], caching: bool) -> None:
        if done.cancelled():
            self._flights.pop(key, None)
            return
        error = done.exception()  # retrieved, so that nobody waiting is no warning
        if not caching:
            return
        self._flights.pop(key, None)
        if error is not None:
            return
        outcome = done.result()
        if isinstance(outcome, Allow) or outcome.cacheable:
            self._cache.put(key, outcome, _size(outcome), self.spec.ttl)

    async def aclose(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        await self._caller.aclose()


class UrlCaller:
    """ForwardAuth: ``GET`` the authorizer's URL with the forwarded headers; 2xx allows."""

    def __init__(self, spec: model.Authorizer, backend: Backend) -> None:
        self._spec = spec
        self._backend = backend
        self._forward = frozenset(spec.forward_headers)
        assert spec.url is not None
        self._path = _split_url(spec.url)[1]

    async def ask(self, request: ProxyRequest, client: RawHeaders, identity: list[str]) -> Outcome:
        uri = request.path.encode("ascii")
        if request.query:
            uri += b"?" + request.query
        headers = [(name, value) for name, value in client if name in self._forward]
        headers.append((b"x-forwarded-method", request.method.encode("latin-1")))
        headers.append((b"x-forwarded-uri", uri))
        headers += [(name, value) for name, value in request.headers if name in _FROM_GATEWAY]
        ask = dataclasses.replace(
            request,
            method="GET",
            path=self._path,
            query=b"",
            headers=headers,
            host=None,
            target_path=None,
            empty_query=False,
        )
        try:
            answer = await self._backend.call(ask)
        except GatewayError as exc:
            raise self._failed(exc.detail) from None
        body = await self._read(answer)
        if 200 <= answer.status < 300:
            return Allow(self._identity_headers(answer.headers), _json_object(body))
        if answer.status >= 500:
            # The authorizer failed, it did not decide: never a pass, even on optional routes.
            raise self._failed(f"it answered {answer.status}")
        relayed = client_response_headers(answer.headers, "", answer.status)
        kept = tuple(
            (name, value)
            for name, value in relayed
            if name not in (b"x-request-id", b"content-length")
        )
        return Deny(answer.status, kept, body)

    async def _read(self, answer: Answer) -> bytes:
        stream = answer.stream
        if stream is None:
            answer.close(False)
            return answer.body
        pieces: list[bytes] = []
        size = 0
        failed: bool | None = True
        try:
            while chunk := await stream.next_chunk():
                size += len(chunk)
                if size > MAX_ANSWER_BODY:
                    raise self._failed(f"an answer body larger than {MAX_ANSWER_BODY} bytes")
                pieces.append(chunk)
            failed = False
        except asyncio.CancelledError:
            deadline = answer.deadline
            if deadline is None or not deadline.expired:
                failed = None
                raise
            deadline.absorb()
            raise self._failed(f"no whole answer within {self._spec.timeout:g}s") from None
        except GatewayError:
            raise
        except Exception as exc:  # the answer broke off
            raise self._failed(f"{type(exc).__name__}: {exc}") from None
        finally:
            answer.close(failed)
        return b"".join(pieces)

    def _identity_headers(self, headers: RawHeaders) -> tuple[tuple[bytes, bytes], ...]:
        wanted = self._spec.upstream_headers
        return tuple(
            (lowered, value)
            for name in wanted
            for lowered, value in ((n.lower(), v) for n, v in headers)
            if lowered == name
        )

    def _failed(self, detail: str) -> AuthorizerUnavailable:
        return AuthorizerUnavailable(
            f"authorizer {self._spec.name!r} is unavailable", detail=detail
        )

    async def aclose(self) -> None:
        await self._backend.aclose()


class FunctionCaller:
    """A Lambda authorizer: the 2.0 authorizer event in, a simple response out."""

    def __init__(self, spec: model.Authorizer, backend: Backend) -> None:
        self._spec = spec
        invoke = getattr(backend, "invoke", None)
        assert invoke is not None, "function and lambda backends invoke"
        self._invoke = invoke
        self._backend = backend

    async def ask(self, request: ProxyRequest, client: RawHeaders, identity: list[str]) -> Outcome:
        try:
            result = await self._invoke(
                request, lambda req, body: build_authorizer_event(req, identity)
            )
            answer = parse_authorizer_result(result)
        except GatewayError as exc:
            raise AuthorizerUnavailable(
                f"authorizer {self._spec.name!r} is unavailable", detail=exc.detail
            ) from None
        if not answer.allowed:
            return Deny(403, error=Forbidden("the authorizer denied the request"))
        headers: list[tuple[bytes, bytes]] = []
        for key, name in self._spec.context_headers:
            value = answer.context.get(key)
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            if _BAD_VALUE.search(text) or text != text.strip():
                raise AuthorizerUnavailable(
                    f"authorizer {self._spec.name!r} is unavailable",
                    detail=f"context value {key!r} cannot be a header value",
                )
            headers.append((name, text.encode("utf-8")))
        return Allow(tuple(headers), answer.context)

    async def aclose(self) -> None:
        await self._backend.aclose()


def _split_url(url: str) -> tuple[str, str]:
    """A url authorizer's scheme and authority, and its path (``/`` when it has none)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority}", slash + path if slash else "/"


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The identity context a url authorizer's allow carries: its body, when a JSON object."""
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _size(outcome: Outcome) -> int:
    """About how many bytes a cached outcome holds."""
    headers = sum(len(name) + len(value) for name, value in outcome.headers)
    if isinstance(outcome, Allow):
        context = outcome.context
        return headers + (len(json.dumps(context)) if context else 0)
    return headers + len(outcome.body)
