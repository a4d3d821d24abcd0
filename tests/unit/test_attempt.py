"""The attempt stage (proxy/attempt.py): what may be sent twice is retried within the route's
budget, with bounded jittered backoff; the fallback answers for errors and listed statuses; a
held answer is read whole (up to HELD_RESPONSE_LIMIT) and closed unsent when replaced; the
final failure is ``Failed`` against the last backend asked, and a listed status nothing else
may answer goes to the client unchanged."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.attempt import HELD_RESPONSE_LIMIT, RETRY_BACKOFF, Attempted, Failed, attempt
from proxy.backends.base import Answer, ProxyRequest
from proxy.errors import (
    CircuitOpen,
    GatewayError,
    Overloaded,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.live import Live, publish
from proxy.metrics import Metrics
from proxy.routes import compile_table
from proxy.table.loader import parse_table
from proxy.table.model import Backend as BackendSpec

pytestmark = pytest.mark.anyio

TABLE = """\
version: 1
backends:
  primary: {url: "http://primary"}
  spare: {url: "http://spare", kind: legacy}
routes:
  - name: retrying
    match: {path: /r}
    backend: primary
    retries: {attempts: 2, retry_on: [connect_failure, reset, timeout], statuses: [503]}
  - name: falling
    match: {path: /f}
    backend: primary
    fallback: {backend: spare, statuses: [502]}
  - name: both
    match: {path: /b}
    backend: primary
    fallback: {backend: spare, statuses: [502]}
    retries: {attempts: 1, retry_on: [connect_failure, reset], statuses: [503]}
  - name: connect-only
    match: {path: /c}
    backend: primary
    retries: {attempts: 1, retry_on: [connect_failure]}
  - name: stingy
    match: {path: /s}
    backend: primary
    fallback: spare
    retries: {attempts: 3, budget: {ratio: 0, min_per_second: 0}}
  - name: stingy-status
    match: {path: /ss}
    backend: primary
    retries: {attempts: 1, statuses: [503], budget: {ratio: 0, min_per_second: 0}}
  - name: patient
    match: {path: /p}
    backend: primary
    retries: {attempts: 5, retry_on: [reset]}
  - name: self
    match: {path: /x}
    split: {primary: 50, spare: 50}
    fallback: {backend: spare, statuses: [502]}
    retries: {attempts: 1, statuses: [503]}
"""

Outcome = Answer | GatewayError


class Scripted:
    """A backend that answers from its script: the next Answer, or the next error raised."""

    def __init__(self, spec: BackendSpec) -> None:
        self.name, self.kind, self.spec = spec.name, spec.kind, spec
        self.script: list[Outcome] = []
        self.calls = 0

    async def call(self, request: ProxyRequest) -> Answer:
        self.calls += 1
        outcome = self.script.pop(0)
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        return None


class FakeStream:
    """A streamed body of ``size`` bytes that ``hold`` reports on as the real ones do."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held_with: list[int] = []
        self.closed = False

    @property
    def body_complete(self) -> bool:
        return bool(self.held_with) and self.size <= self.held_with[-1]

    def take(self) -> bytes:
        return b""

    async def next_chunk(self) -> bytes:
        return b""

    async def hold(self, limit: int) -> bool:
        self.held_with.append(limit)
        return self.size <= limit

    def close(self) -> None:
        self.closed = True


@dataclass
class Tracked:
    """An Answer and how it was closed (not at all: empty)."""

    answer: Answer
    closes: list[bool | None] = field(default_factory=list)


def answer(status: int, stream: FakeStream | None = None) -> Tracked:
    closes: list[bool | None] = []
    made = Answer(status, [(b"x-status", b"%d" % status)], b"body", stream, None, closes.append)
    return Tracked(made, closes)


@dataclass(slots=True)
class BodyState:
    started: bool
    kept: bytes | None = None


@dataclass
class World:
    live: Live
    metrics: Metrics
    primary: Scripted
    spare: Scripted
    sleeps: list[float]

    async def run(
        self,
        route: str,
        method: str = "GET",
        *,
        body: BodyState | None = None,
        backend: str = "primary",
        rng: random.Random | None = None,
    ) -> Attempted:
        compiled = next(r for r in self.live.table.router.routes if r.name == route)
        task = asyncio.current_task()
        assert task is not None
        request = ProxyRequest(
            method=method,
            path="/",
            query=b"",
            headers=[],
            body=_no_body() if body is not None else None,
            request_id="rid",
            route=route,
            route_key=compiled.route_key,
            captures={},
            client_ip="127.0.0.1",
            host=None,
            protocol="HTTP/1.1",
            task=task,
        )
        chosen = self.primary if backend == "primary" else self.spare
        return await attempt(
            compiled, self.live.state(compiled), chosen, request, body, rng or random.Random(0)
        )

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        found = {}
        for family in text_string_to_metric_families(self.metrics.exposition().decode()):
            for sample in family.samples:
                if sample.name == name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    def counted(self, name: str) -> dict[tuple[str, ...], float]:
        """The non-zero samples of a counter, by their label values in label-name order."""
        return {
            tuple(value for _, value in key): value
            for key, value in self.samples(name).items()
            if value
        }


async def _no_body() -> AsyncIterator[bytes]:  # pragma: no cover - never read here
    yield b""


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    built: dict[str, Scripted] = {}

    def make(spec: BackendSpec) -> Scripted:
        built[spec.name] = Scripted(spec)
        return built[spec.name]

    metrics = Metrics("t")
    live = publish(compile_table(parse_table(TABLE.encode(), "t.yaml"), make), metrics)
    sleeps: list[float] = []
    real_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    # proxy.attempt waits with asyncio.sleep: record what it asks for, and wait no time.
    monkeypatch.setattr(asyncio, "sleep", sleep)
    return World(live, metrics, built["primary"], built["spare"], sleeps)


def refused() -> UpstreamUnavailable:
    return UpstreamUnavailable("backend 'primary' is unavailable", never_sent=True)


def reset() -> UpstreamUnavailable:
    return UpstreamUnavailable("backend 'primary' is unavailable", "ReadError: reset")


def timed_out() -> UpstreamTimeout:
    return UpstreamTimeout("backend 'primary' did not answer in time")


# -- what may be sent twice --------------------------------------------------------------


async def test_a_connect_failure_is_retried_for_any_method(world: World) -> None:
    ok = answer(201)
    world.primary.script = [refused(), ok.answer]
    done = await world.run("connect-only", "POST")
    assert done.answer is ok.answer
    assert done.backend is world.primary
    assert world.primary.calls == 2
    assert world.counted("strangler_retries_total") == {
        ("primary", "connect_failure", "connect-only"): 1.0
    }
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "unavailable", "connect-only"): 1.0
    }
    route = next(r for r in world.live.table.router.routes if r.name == "connect-only")
    budget = world.live.state(route).budget
    assert budget is not None
    assert budget.window() == (1, 1)  # one request, one retry spent


async def test_a_reset_is_retried_only_for_idempotent_methods(world: World) -> None:
    world.primary.script = [reset(), answer(200).answer]
    await world.run("retrying", "PUT")
    assert world.primary.calls == 2
    assert world.counted("strangler_retries_total") == {("primary", "reset", "retrying"): 1.0}

    error = reset()
    world.primary.script = [error]
    with pytest.raises(Failed) as caught:
        await world.run("retrying", "POST")
    assert caught.value.error is error
    assert world.primary.calls == 3  # the POST was asked once
    assert world.counted("strangler_retries_total") == {("primary", "reset", "retrying"): 1.0}


async def test_a_timeout_is_retried_when_listed_and_for_idempotent_methods(world: World) -> None:
    world.primary.script = [timed_out(), answer(200).answer]
    await world.run("retrying", "GET")
    assert world.counted("strangler_retries_total") == {("primary", "timeout", "retrying"): 1.0}
    world.primary.script = [timed_out()]
    with pytest.raises(Failed):
        await world.run("retrying", "PATCH")
    # connect-only lists neither timeout nor reset.
    for error in (timed_out(), reset()):
        world.primary.script = [error]
        with pytest.raises(Failed):
            await world.run("connect-only", "GET")
    assert world.primary.calls == 2 + 1 + 2
    assert world.counted("strangler_retries_total") == {("primary", "timeout", "retrying"): 1.0}


async def test_a_listed_status_is_held_and_retried_for_idempotent_methods(world: World) -> None:
    first, second = answer(503), answer(200)
    world.primary.script = [first.answer, second.answer]
    done = await world.run("retrying", "GET")
    assert done.answer is second.answer
    assert first.closes == [False]  # closed unsent
    assert second.closes == []
    assert world.counted("strangler_retries_total") == {("primary", "status", "retrying"): 1.0}
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "status", "retrying"): 1.0
    }


async def test_a_listed_status_is_not_held_for_a_post_or_a_request_with_a_body(
    world: World,
) -> None:
    for method, body in (("POST", None), ("GET", BodyState(False))):
        stream = FakeStream(10)
        held = answer(503, stream)
        world.primary.script = [held.answer]
        done = await world.run("retrying", method, body=body)
        assert done.answer is held.answer
        assert stream.held_with == []  # not even read ahead
        assert held.closes == []
    assert world.primary.calls == 2
    assert world.counted("strangler_retries_total") == {}


async def test_nothing_is_sent_again_once_the_body_has_started(world: World) -> None:
    error = refused()
    world.primary.script = [error]
    with pytest.raises(Failed) as caught:
        await world.run("connect-only", "POST", body=BodyState(True))
    assert caught.value.error is error
    world.primary.script = [timed_out()]
    with pytest.raises(Failed):
        await world.run("falling", "PUT", body=BodyState(True))
    assert world.primary.calls == 2
    assert world.spare.calls == 0
    assert world.counted("strangler_retries_total") == {}
    assert world.counted("strangler_fallbacks_total") == {}


# -- the budget and the backoff ------------------------------------------------------------


async def test_an_exhausted_budget_stops_retries_and_is_counted(world: World) -> None:
    world.primary.script = [reset()]
    world.spare.script = [answer(200).answer]
    done = await world.run("stingy", "GET")
    # No retry left: the fallback answers instead.
    assert done.backend is world.spare
    assert world.primary.calls == 1
    assert world.counted("strangler_retries_total") == {}
    assert world.counted("strangler_retry_budget_exhausted_total") == {("stingy",): 1.0}
    route = next(r for r in world.live.table.router.routes if r.name == "stingy")
    budget = world.live.state(route).budget
    assert budget is not None
    assert budget.window() == (1, 0)


async def test_the_budget_is_spent_by_retries(world: World) -> None:
    route = next(r for r in world.live.table.router.routes if r.name == "retrying")
    budget = world.live.state(route).budget
    assert budget is not None
    world.primary.script = [reset(), reset(), answer(200).answer]
    await world.run("retrying", "GET")
    assert budget.window() == (1, 2)
    # ratio 0.2 of 2 requests, plus 10 a second over ten seconds: 100.4 retries in all.
    for _ in range(98):
        assert budget.try_retry()
    world.primary.script = [reset()]
    with pytest.raises(Failed):
        await world.run("retrying", "GET")
    assert budget.window() == (2, 100)
    assert world.counted("strangler_retry_budget_exhausted_total") == {("retrying",): 1.0}


async def test_backoff_is_full_jitter_doubling_up_to_the_cap(world: World) -> None:
    script: list[Outcome] = [reset() for _ in range(5)]
    world.primary.script = [*script, answer(200).answer]
    await world.run("patient", "GET", rng=random.Random(42))
    caps = [0.025, 0.05, 0.1, 0.2, 0.25]
    mirror = random.Random(42)
    assert world.sleeps == [mirror.uniform(0, cap) for cap in caps]
    assert all(0 <= delay <= cap for delay, cap in zip(world.sleeps, caps, strict=True))
    assert world.primary.calls == 6
    assert caps[0] == RETRY_BACKOFF


async def test_retries_stop_after_the_attempts(world: World) -> None:
    last = reset()
    script: list[Outcome] = [reset() for _ in range(5)]
    world.primary.script = [*script, last]
    with pytest.raises(Failed) as caught:
        await world.run("patient", "GET")
    assert caught.value.error is last
    assert world.primary.calls == 6
    assert len(world.sleeps) == 5
    assert world.counted("strangler_retries_total") == {("primary", "reset", "patient"): 5.0}
    # The gateway counts the final failure; the attempt stage the five it retried.
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "unavailable", "patient"): 5.0
    }


# -- the fallback --------------------------------------------------------------------------


async def test_the_fallback_answers_for_an_error(world: World) -> None:
    ok = answer(200)
    world.primary.script = [timed_out()]
    world.spare.script = [ok.answer]
    done = await world.run("falling", "GET")
    assert done.answer is ok.answer
    assert done.backend is world.spare
    state = world.live.state(next(r for r in world.live.table.router.routes if r.name == "falling"))
    assert done.metrics is state.metrics.backends["spare"]
    assert world.counted("strangler_fallbacks_total") == {
        ("primary", "spare", "error", "falling"): 1.0
    }
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "timeout", "falling"): 1.0
    }


async def test_the_fallback_answers_a_post_only_when_it_was_never_sent(world: World) -> None:
    world.primary.script = [reset()]
    with pytest.raises(Failed) as caught:
        await world.run("falling", "POST")
    assert caught.value.backend is world.primary
    assert world.spare.calls == 0
    for error in (CircuitOpen("open"), Overloaded("full"), refused()):
        world.primary.script = [error]
        world.spare.script = [answer(200).answer]
        assert (await world.run("falling", "POST")).backend is world.spare
    assert world.spare.calls == 3
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "circuit_open", "falling"): 1.0,
        ("primary", "overloaded", "falling"): 1.0,
        ("primary", "unavailable", "falling"): 1.0,
    }


async def test_the_fallback_answers_for_a_listed_status(world: World) -> None:
    stream = FakeStream(100)
    held, ok = answer(502, stream), answer(200)
    world.primary.script = [held.answer]
    world.spare.script = [ok.answer]
    done = await world.run("falling", "GET")
    assert done.answer is ok.answer
    assert held.closes == [False]
    assert stream.held_with == [HELD_RESPONSE_LIMIT]
    assert stream.closed
    assert world.counted("strangler_fallbacks_total") == {
        ("primary", "spare", "status", "falling"): 1.0
    }
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "status", "falling"): 1.0
    }
    # An unlisted status, or a listed one for a POST, is the client's answer.
    for status, method in ((500, "GET"), (502, "POST")):
        kept = answer(status)
        world.primary.script = [kept.answer]
        assert (await world.run("falling", method)).answer is kept.answer
        assert kept.closes == []
    assert world.spare.calls == 1


async def test_a_retry_status_then_a_fallback_status(world: World) -> None:
    retried, fell, ok = answer(503), answer(502), answer(200)
    world.primary.script = [retried.answer, fell.answer]
    world.spare.script = [ok.answer]
    done = await world.run("both", "GET")
    assert done.answer is ok.answer
    assert (retried.closes, fell.closes) == ([False], [False])
    assert world.counted("strangler_retries_total") == {("primary", "status", "both"): 1.0}
    assert world.counted("strangler_fallbacks_total") == {
        ("primary", "spare", "status", "both"): 1.0
    }


async def test_the_fallback_is_the_last_resort(world: World) -> None:
    last = refused()
    world.primary.script = [timed_out()]
    world.spare.script = [last]
    with pytest.raises(Failed) as caught:
        await world.run("both", "GET")
    # Not retried on the fallback, though the route retries connect failures.
    assert caught.value.error is last
    assert caught.value.backend is world.spare
    state = world.live.state(next(r for r in world.live.table.router.routes if r.name == "both"))
    assert caught.value.metrics is state.metrics.backends["spare"]
    assert world.spare.calls == 1
    # The fallback's listed status is not held either.
    stream = FakeStream(10)
    kept = answer(503, stream)
    world.primary.script = [timed_out()]
    world.spare.script = [kept.answer]
    done = await world.run("both", "GET")
    assert done.answer is kept.answer
    assert stream.held_with == []
    assert kept.closes == []


async def test_the_split_choosing_the_fallback_only_retries(world: World) -> None:
    stream = FakeStream(10)
    kept = answer(502, stream)  # a fallback status, from the fallback itself
    world.spare.script = [kept.answer]
    done = await world.run("self", "GET", backend="spare")
    assert done.answer is kept.answer
    assert stream.held_with == []
    retried, ok = answer(503), answer(200)
    world.spare.script = [retried.answer, ok.answer]
    done = await world.run("self", "GET", backend="spare")
    assert done.answer is ok.answer
    assert world.counted("strangler_retries_total") == {("spare", "status", "self"): 1.0}
    assert world.primary.calls == 0


# -- held answers --------------------------------------------------------------------------


async def test_a_held_answer_is_read_whole_up_to_the_limit(world: World) -> None:
    stream = FakeStream(HELD_RESPONSE_LIMIT)
    held, ok = answer(503, stream), answer(200)
    world.primary.script = [held.answer, ok.answer]
    done = await world.run("retrying", "GET")
    assert stream.held_with == [HELD_RESPONSE_LIMIT]
    assert done.answer is ok.answer
    assert stream.closed
    assert held.closes == [False]


async def test_a_held_answer_larger_than_the_limit_is_relayed_as_it_is(world: World) -> None:
    stream = FakeStream(HELD_RESPONSE_LIMIT + 1)
    big = answer(503, stream)
    world.primary.script = [big.answer, answer(200).answer]
    done = await world.run("retrying", "GET")
    assert done.answer is big.answer
    assert done.backend is world.primary
    assert stream.held_with == [HELD_RESPONSE_LIMIT]
    assert not stream.closed
    assert big.closes == []
    assert world.primary.calls == 1
    assert world.counted("strangler_retries_total") == {}


async def test_a_held_status_nothing_else_may_answer_is_the_backends_own(world: World) -> None:
    # Held (a retry was allowed by the attempts), but the budget has none left and there is
    # no fallback: the client gets the backend's own answer, exactly as it came.
    stream = FakeStream(10)
    held = answer(503, stream)
    world.primary.script = [held.answer]
    done = await world.run("stingy-status", "GET")
    assert stream.held_with == [HELD_RESPONSE_LIMIT]  # it was held ...
    assert done.answer is held.answer  # ... and is given back unchanged
    assert (done.answer.status, done.answer.headers) == (503, [(b"x-status", b"503")])
    assert done.answer.stream is stream
    assert done.backend is world.primary
    assert held.closes == []
    assert not stream.closed
    assert world.primary.calls == 1
    assert world.counted("strangler_retry_budget_exhausted_total") == {("stingy-status",): 1.0}
    # The gateway counts it when it records the request, not the attempt stage.
    assert world.counted("strangler_upstream_errors_total") == {}


async def test_the_last_attempts_listed_status_is_not_held(world: World) -> None:
    answers = [answer(503), answer(503), answer(503)]
    world.primary.script = [a.answer for a in answers]
    done = await world.run("retrying", "GET")
    assert done.answer is answers[-1].answer
    assert done.answer.status == 503
    assert done.answer.headers == [(b"x-status", b"503")]
    assert done.answer.body == b"body"
    assert [a.closes for a in answers] == [[False], [False], []]
    assert world.counted("strangler_retries_total") == {("primary", "status", "retrying"): 2.0}
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "status", "retrying"): 2.0
    }


async def test_the_final_failure_is_counted_against_the_last_backend(world: World) -> None:
    last = timed_out()
    world.primary.script = [refused(), reset(), last]
    with pytest.raises(Failed) as caught:
        await world.run("retrying", "GET")
    assert caught.value.error is last
    assert caught.value.backend is world.primary
    state = world.live.state(
        next(r for r in world.live.table.router.routes if r.name == "retrying")
    )
    assert caught.value.metrics is state.metrics.backends["primary"]
    assert world.counted("strangler_retries_total") == {
        ("primary", "connect_failure", "retrying"): 1.0,
        ("primary", "reset", "retrying"): 1.0,
    }
    assert world.counted("strangler_upstream_errors_total") == {
        ("primary", "unavailable", "retrying"): 2.0
    }
