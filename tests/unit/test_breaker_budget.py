"""The circuit breaker's transitions and the retry budget's bound, stepped with a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.breaker import CircuitBreaker, State
from proxy.retrybudget import RetryBudget
from proxy.table.model import CircuitBreaker as Spec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**spec: float) -> tuple[CircuitBreaker, Clock, list[State]]:
    clock = Clock()
    changes: list[State] = []
    settings = {"failure_ratio": 0.5, "min_requests": 4, "window": 10.0, "open_for": 5.0}
    settings.update(spec)
    made = CircuitBreaker(Spec(**settings), changes.append, clock)  # type: ignore[arg-type]
    return made, clock, changes


def outcomes(made: CircuitBreaker, pattern: str) -> None:
    """Report one outcome per letter: s(uccess), f(ailure), n(eutral)."""
    for letter in pattern:
        assert made.allow()
        {"s": made.success, "f": made.failure, "n": made.neutral}[letter]()


def test_opens_at_the_failure_ratio_once_the_window_has_min_requests() -> None:
    made, _, changes = breaker()
    outcomes(made, "fff")  # three failures are not yet min_requests
    assert made.state is State.CLOSED
    outcomes(made, "s")  # 3 of 4 failed, but the ratio is judged on failures only
    assert made.state is State.CLOSED
    outcomes(made, "f")  # 4 of 5 >= 0.5
    assert made.state is State.OPEN
    assert changes == [State.OPEN]  # building it reports nothing: publishing does
    assert not made.allow()


def test_below_the_ratio_it_stays_closed() -> None:
    made, _, _ = breaker(failure_ratio=0.6)
    outcomes(made, "sfsfsfsfsf")  # never above 50%, below 60%
    assert made.state is State.CLOSED
    assert made.window() == (10, 5)


def test_neutral_outcomes_count_for_nothing() -> None:
    made, _, _ = breaker()
    outcomes(made, "nnnnnnfff")
    assert made.state is State.CLOSED
    assert made.window() == (3, 3)


def test_old_outcomes_leave_the_window() -> None:
    made, clock, _ = breaker()
    outcomes(made, "fff")
    clock.now += 10.5  # past the whole window
    outcomes(made, "f")
    assert made.window() == (1, 1)
    assert made.state is State.CLOSED


def test_half_open_lets_probes_through_and_closes_when_they_succeed() -> None:
    made, clock, changes = breaker(probes=2)
    outcomes(made, "ffff")
    assert made.state is State.OPEN
    clock.now += 4.9
    assert not made.allow()
    clock.now += 0.2
    assert made.allow()  # two probes
    assert made.allow()
    assert made.state is State.HALF_OPEN
    assert not made.allow()  # no third while they run
    made.success()
    assert made.state is State.HALF_OPEN
    assert not made.allow()  # a probe's place is used once it has succeeded
    made.success()
    assert made.state is State.CLOSED
    assert made.window() == (0, 0)  # closes with an empty window
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_failed_probe_opens_it_again_for_the_full_time() -> None:
    made, clock, changes = breaker()
    outcomes(made, "ffff")
    clock.now += 5
    assert made.allow()
    made.failure()
    assert made.state is State.OPEN
    clock.now += 4.9
    assert not made.allow()
    clock.now += 0.1
    assert made.allow()
    assert changes == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN]


def test_a_neutral_probe_frees_its_place() -> None:
    made, clock, _ = breaker()
    outcomes(made, "ffff")
    clock.now += 5
    assert made.allow()
    assert not made.allow()
    made.neutral()
    assert made.allow()
    made.success()
    assert made.state is State.CLOSED


def test_budget_allows_ratio_of_requests_plus_the_floor() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 0.0, clock)
    for _ in range(50):
        budget.request()
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 10
    floor = RetryBudget(0.0, 0.5, clock)
    assert sum(floor.try_retry() for _ in range(100)) == 5  # 0.5/s over ten seconds


def test_budget_forgets_requests_and_retries_after_ten_seconds() -> None:
    clock = Clock()
    budget = RetryBudget(0.5, 0.0, clock)
    for _ in range(10):
        budget.request()
    assert sum(budget.try_retry() for _ in range(10)) == 5
    clock.now += 5
    for _ in range(10):
        budget.request()
    assert sum(budget.try_retry() for _ in range(10)) == 5  # 20 requests, 10 retries
    clock.now += 5.5  # the first second-batch has left the window
    assert budget.window() == (10, 5)
    assert not budget.try_retry()
    clock.now += 5
    assert budget.window() == (0, 0)


@given(
    st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.booleans(), st.integers(0, 4)),
        max_size=200,
    ),
    st.floats(0, 1),
)
def test_retries_never_exceed_the_budget_in_any_ten_second_window(
    events: list[tuple[float, bool, int]], ratio: float
) -> None:
    clock = Clock()
    budget = RetryBudget(ratio, 0.0, clock)
    log: list[tuple[float, str]] = []
    for step, is_request, wanted in events:
        clock.now += step
        if is_request:
            budget.request()
            log.append((clock.now, "request"))
        for _ in range(wanted):
            if budget.try_retry():
                log.append((clock.now, "retry"))
    # Each retry was granted against the window ending at its time; the window is ten
    # one-second buckets, so it always covers at least the last nine seconds.
    for at, what in log:
        if what != "retry":
            continue
        retries = sum(1 for t, w in log if at - 9 < t <= at and w == "retry")
        requests = sum(1 for t, w in log if at - 10 <= t <= at and w == "request")
        assert retries <= ratio * requests + 1e-9
