"""The rollout's decision for a step (proxy/rollout/judge.py): each gate, in the order the
docs give, with the numbers it reports; the quantile as Prometheus computes it; the weights a
promotion writes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.rollout.judge import (
    COMPLETE,
    HOLD,
    PROMOTE,
    ROLLBACK,
    Window,
    judge,
    legacy_weights,
    quantile,
)
from proxy.table.model import Rollout

ROLLOUT = Rollout(
    to="catalog",
    steps=(500, 2500, 5000, 10000),
    every=1800.0,
    min_requests=500,
    max_error_ratio=0.01,
    max_error_ratio_vs_legacy=2.0,
    max_p99_vs_legacy=1.5,
    min_shadow_parity=0.99,
    on_failure="rollback",
)
FAST = {0.05: 90.0, 0.1: 99.5, 0.25: 100.0, float("inf"): 100.0}
SLOW = {0.05: 10.0, 0.1: 50.0, 0.25: 99.5, float("inf"): 100.0}
HEALTHY = Window(
    new_requests=1000,
    new_errors=4,
    legacy_requests=19000,
    legacy_errors=57,
    new_buckets=FAST,
    legacy_buckets=FAST,
    shadow_match=995,
    shadow_mismatch=5,
)


def test_a_healthy_step_is_promoted_to_the_next_weight() -> None:
    decision = judge(ROLLOUT, 500, 1800.0, HEALTHY, shadowed=True)
    assert (decision.action, decision.weight) == (PROMOTE, 2500)
    assert decision.reason == "every gate passed; catalog goes from 5% to 25%"
    assert decision.evidence["new_error_ratio"] == 0.004
    assert decision.evidence["legacy_error_ratio"] == 0.003
    assert decision.evidence["shadow_parity"] == 0.995


def test_before_every_has_passed_it_holds_whatever_the_numbers() -> None:
    broken = dataclasses.replace(HEALTHY, new_errors=1000)
    decision = judge(ROLLOUT, 500, 1799.0, broken, shadowed=True)
    assert (decision.action, decision.weight) == (HOLD, 500)
    assert decision.reason == "the step is 1799s old; promotion waits for 1800s"


def test_with_too_little_traffic_it_holds() -> None:
    decision = judge(ROLLOUT, 500, 7200.0, dataclasses.replace(HEALTHY, new_requests=499), True)
    assert (decision.action, decision.reason) == (
        HOLD,
        "catalog served 499 requests in the step; 500 are needed",
    )


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (
            dataclasses.replace(HEALTHY, new_errors=11),
            "catalog answered 1.10% 5xx, above max_error_ratio 1.00%",
        ),
        (
            dataclasses.replace(HEALTHY, new_errors=7, legacy_errors=57),
            "catalog answered 0.70% 5xx, above 2 times legacy's 0.30%",
        ),
        (
            dataclasses.replace(HEALTHY, new_buckets=SLOW),
            "catalog's p99 is 248.5 ms, above 1.5 times legacy's 97.4 ms",
        ),
        (
            dataclasses.replace(HEALTHY, shadow_match=980, shadow_mismatch=20),
            "the shadow matched 98.00% of 1000 comparisons, below min_shadow_parity 99.00%",
        ),
    ],
)
def test_each_failing_gate_rolls_back_and_says_why(window: Window, reason: str) -> None:
    decision = judge(ROLLOUT, 2500, 3600.0, window, shadowed=True)
    assert (decision.action, decision.weight, decision.reason) == (ROLLBACK, 0, reason)


def test_with_on_failure_hold_a_failing_gate_holds_the_step() -> None:
    holding = dataclasses.replace(ROLLOUT, on_failure="hold")
    decision = judge(holding, 2500, 3600.0, dataclasses.replace(HEALTHY, new_errors=50), True)
    assert (decision.action, decision.weight) == (HOLD, 2500)
    assert decision.reason.endswith("; on_failure is hold")


def test_the_parity_gate_needs_comparisons_and_applies_only_to_a_shadowed_route() -> None:
    blind = dataclasses.replace(HEALTHY, shadow_match=0, shadow_mismatch=0)
    assert judge(ROLLOUT, 500, 1800.0, blind, shadowed=True).action == HOLD
    assert judge(ROLLOUT, 500, 1800.0, blind, shadowed=False).action == PROMOTE


def test_the_last_step_is_complete() -> None:
    decision = judge(ROLLOUT, 10000, 0.0, Window(), shadowed=False)
    assert (decision.action, decision.reason) == (COMPLETE, "catalog serves 100%")


def test_the_quantile_is_prometheus_histogram_quantile() -> None:
    # Prometheus: histogram_quantile(0.99, ...) over these buckets.
    assert quantile(0.99, FAST) == pytest.approx(0.05 + 0.05 * (99 - 90) / 9.5)
    assert quantile(0.5, {1.0: 0.0, 2.0: 10.0, float("inf"): 10.0}) == pytest.approx(1.5)
    # Past the highest finite bound it answers that bound; without observations, nothing.
    assert quantile(0.99, {0.1: 0.0, float("inf"): 5.0}) == 0.1
    assert quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]), st.integers(0, 10000), min_size=1, max_size=3
    ),
    st.integers(0, 10000),
)
def test_the_new_weights_sum_to_100_and_keep_the_legacy_proportions(
    legacy: dict[str, int], weight: int
) -> None:
    split = {"to": 0, **legacy}
    weights = legacy_weights(split, "to", weight)
    assert sum(weights.values()) == 10000
    assert weights["to"] == weight
    assert list(weights) == list(split)  # the file's order
    total = sum(legacy.values())
    for name, share in legacy.items():
        wanted = (10000 - weight) * share / total if total else (10000 - weight) / len(legacy)
        assert abs(weights[name] - wanted) <= len(legacy)
