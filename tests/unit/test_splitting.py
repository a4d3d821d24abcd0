"""Weighted and sticky splitting: exact guarantees, statistical bounds from the binomial
distribution, and the monotone ramp as a property."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.splitting import Choice, Split, key_points

#: The probability of a false alarm per bound checked.
ALPHA = 1e-6


def binomial_bounds(n: int, p: float, alpha: float = ALPHA) -> tuple[int, int]:
    """The smallest range [low, high] holding at least 1 - alpha of Binomial(n, p), cut
    evenly from both tails, computed exactly in log space."""
    log_pmf = [
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + (k * math.log(p) if k else 0.0)
        + ((n - k) * math.log1p(-p) if n - k else 0.0)
        for k in range(n + 1)
    ]
    pmf = [math.exp(v) for v in log_pmf]
    low, tail = 0, 0.0
    while tail + pmf[low] < alpha / 2:
        tail += pmf[low]
        low += 1
    high, tail = n, 0.0
    while tail + pmf[high] < alpha / 2:
        tail += pmf[high]
        high -= 1
    return low, high


def split(*weights: tuple[str, int, bool]) -> Split[str]:
    return Split("catalog", [Choice(name, weight, is_new) for name, weight, is_new in weights])


def test_the_bounds_are_the_binomial_ones() -> None:
    low, high = binomial_bounds(10_000, 0.25)
    assert (low, high) == (2290, 2714)  # mean 2500, sd 43.3: about 4.9 sd either side


def test_weighted_random_shares_converge_to_the_weights() -> None:
    chooser = split(("catalog", 2500, True), ("monolith", 7500, False))
    rng = random.Random(20261127)
    n = 10_000
    picks = [chooser.pick(rng) for _ in range(n)]
    low, high = binomial_bounds(n, 0.25)
    assert low <= picks.count("catalog") <= high


def test_three_way_random_split_within_bounds() -> None:
    chooser = split(("a", 1000, True), ("b", 3333, True), ("legacy", 5667, False))
    rng = random.Random(7)
    n = 10_000
    picks = [chooser.pick(rng) for _ in range(n)]
    for name, weight in (("a", 1000), ("b", 3333), ("legacy", 5667)):
        low, high = binomial_bounds(n, weight / 10_000)
        assert low <= picks.count(name) <= high, name


def test_sticky_keys_share_out_by_weight() -> None:
    chooser = split(("catalog", 1234, True), ("monolith", 8766, False))
    n = 10_000
    landed = [chooser.pick_for_key(f"user-{i}") for i in range(n)]
    low, high = binomial_bounds(n, 0.1234)
    assert low <= landed.count("catalog") <= high


def test_weight_zero_gets_exactly_nothing() -> None:
    chooser = split(("catalog", 0, True), ("monolith", 10_000, False))
    rng = random.Random(1)
    assert {chooser.pick(rng) for _ in range(5000)} == {"monolith"}
    assert {chooser.pick_for_key(str(i)) for i in range(5000)} == {"monolith"}
    ramp = split(("catalog", 1, True), ("monolith", 9999, False), ("spare", 0, False))
    assert "spare" not in {ramp.pick(rng) for _ in range(5000)}
    assert "spare" not in {ramp.pick_for_key(str(i)) for i in range(5000)}


def test_the_smallest_step_is_one_basis_point() -> None:
    chooser = split(("catalog", 1, True), ("monolith", 9999, False))
    n = 200_000
    landed = sum(chooser.pick_for_key(f"k{i}") == "catalog" for i in range(n))
    low, high = binomial_bounds(n, 0.0001)
    assert low <= landed <= high
    assert landed > 0


def test_the_sticky_hash_is_fixed_forever() -> None:
    # Replicas and restarts must agree, so these numbers may never change.
    assert key_points("catalog", "u-42") == key_points("catalog", "u-42")
    assert key_points("catalog", "u-42") == (9648, 804851898302642004)
    assert key_points("other-route", "u-42")[0] != key_points("catalog", "u-42")[0]


def test_the_same_key_keeps_its_backend_in_every_rebuilt_split() -> None:
    # A reload or a restart builds a new Split from the same weights: no key may move.
    first = split(("catalog", 5000, True), ("monolith", 5000, False))
    again = split(("catalog", 5000, True), ("monolith", 5000, False))
    landed = {key: first.pick_for_key(key) for key in KEYS}
    assert landed == {key: again.pick_for_key(key) for key in KEYS}
    assert set(landed.values()) == {"catalog", "monolith"}


KEYS = [f"user-{i}" for i in range(400)]


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=8))
def test_the_ramp_is_monotone_between_legacy_and_new(new_weights: list[int]) -> None:
    """Over any sequence of weight changes, raising the new share only moves keys from legacy
    to new and lowering it only moves them back."""
    previous: dict[str, str] | None = None
    previous_weight = 0
    for weight in new_weights:
        chooser = split(("catalog", weight, True), ("monolith", 10_000 - weight, False))
        landed = {key: chooser.pick_for_key(key) for key in KEYS}
        if previous is not None:
            moved = {(previous[k], landed[k]) for k in KEYS if previous[k] != landed[k]}
            if weight >= previous_weight:
                assert moved <= {("monolith", "catalog")}
            else:
                assert moved <= {("catalog", "monolith")}
        previous, previous_weight = landed, weight


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 100), st.integers(0, 100)),
        min_size=2,
        max_size=6,
    )
)
def test_with_several_backends_keys_cross_the_boundary_only_one_way(
    steps: list[tuple[int, int, int]],
) -> None:
    """Two new and two legacy backends: whatever the weights within each side, a key changes
    side only in the direction the new share moved."""
    previous: dict[str, bool] | None = None
    previous_new = 0
    for new_total, new_a_percent, legacy_a_percent in steps:
        new_a = new_total * new_a_percent // 100
        legacy_total = 10_000 - new_total
        legacy_a = legacy_total * legacy_a_percent // 100
        chooser = split(
            ("new-a", new_a, True),
            ("legacy-a", legacy_a, False),
            ("new-b", new_total - new_a, True),
            ("legacy-b", legacy_total - legacy_a, False),
        )
        on_new = {key: chooser.pick_for_key(key).startswith("new") for key in KEYS}
        if previous is not None:
            if new_total >= previous_new:
                assert all(on_new[k] for k in KEYS if previous[k])
            if new_total <= previous_new:
                assert not any(on_new[k] for k in KEYS if not previous[k])
        previous, previous_new = on_new, new_total


def test_weights_must_sum_to_the_scale() -> None:
    with pytest.raises(ValueError, match="10000 basis points"):
        split(("a", 5000, True), ("b", 4000, False))
