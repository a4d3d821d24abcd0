"""Weighted and sticky splitting: exact guarantees, statistical bounds from the binomial
distribution, and the monotone ramp as a property."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.splitting import Choice, Split, key_points

#: The checkout, where a fresh interpreter imports the same proxy package.
ROOT = Path(__file__).resolve().parents[2]

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


#: key_points for (route, key), computed once with hashlib straight from the rule in
#: proxy.splitting's docstring (BLAKE2b with a 16-byte digest of "route\0key" in UTF-8; the
#: first 8 bytes big-endian mod 10000, the last 8 big-endian), not by calling the code.
#: Replicas and restarts must agree, so these numbers may never change.
GOLDEN_POINTS = {
    ("catalog", "u-42"): (9648, 804851898302642004),
    ("other-route", "u-42"): (8849, 1110569477819252858),
    ("catalog", "u-43"): (5997, 10010121053838414258),
    ("catalog", ""): (8615, 7380819178502393156),
    ("checkout", "session-ünïcode"): (5437, 4757597300979086605),
}

#: Where user-0 ... user-11 land on route "catalog" split new-a 15%, legacy-a 30%, new-b 25%,
#: legacy-b 30%, by the same rule: the side point picks new below 4000, the second number modulo
#: the side's total picks within it. Every backend is reached, so both numbers matter.
FOUR_WAY = (
    ("new-a", 1500, True),
    ("legacy-a", 3000, False),
    ("new-b", 2500, True),
    ("legacy-b", 3000, False),
)
GOLDEN_FOUR_WAY = [
    "legacy-a",
    "new-b",
    "legacy-b",
    "legacy-a",
    "new-a",
    "legacy-a",
    "legacy-b",
    "legacy-a",
    "legacy-a",
    "legacy-b",
    "new-b",
    "new-a",
]

KEYS = [f"user-{i}" for i in range(400)]

#: Run in a fresh interpreter: the same numbers and choices as a restarted replica sees them.
FRESH_PROCESS = """
import json, sys
from proxy.splitting import Choice, Split, key_points
spec = json.loads(sys.stdin.read())
four = Split("catalog", [Choice(*choice) for choice in spec["four_way"]])
print(json.dumps({
    "points": [list(key_points(route, key)) for route, key in spec["pairs"]],
    "four_way": [four.pick_for_key(f"user-{i}") for i in range(len(spec["golden"]))],
    "rebuilt": {key: four.pick_for_key(key) for key in spec["keys"]},
    "salted": hash("u-42"),
}))
"""


@functools.cache
def in_fresh_process(hash_seed: str) -> dict[str, Any]:
    """What a new process started with PYTHONHASHSEED=``hash_seed`` computes."""
    spec = {
        "pairs": list(GOLDEN_POINTS),
        "four_way": FOUR_WAY,
        "golden": GOLDEN_FOUR_WAY,
        "keys": KEYS,
    }
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_sticky_hash_is_fixed_forever() -> None:
    for (route, key), points in GOLDEN_POINTS.items():
        assert key_points(route, key) == points, (route, key)
    chooser = split(*FOUR_WAY)
    assert [
        chooser.pick_for_key(f"user-{i}") for i in range(len(GOLDEN_FOUR_WAY))
    ] == GOLDEN_FOUR_WAY


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_the_sticky_hash_is_the_same_in_every_process(hash_seed: str) -> None:
    """Never Python's salted ``hash()``: a process with another string-hash seed computes the
    very same numbers and choices."""
    fresh = in_fresh_process(hash_seed)
    assert [tuple(points) for points in fresh["points"]] == list(GOLDEN_POINTS.values())
    assert fresh["four_way"] == GOLDEN_FOUR_WAY


def test_the_fresh_processes_really_hash_strings_differently() -> None:
    # Otherwise the test above could not tell a salted hash() from a stable one.
    assert in_fresh_process("1")["salted"] != in_fresh_process("2")["salted"]


def test_the_same_key_keeps_its_backend_in_every_rebuilt_split() -> None:
    # A reload builds a new Split from the same weights, a restart builds it in a new process
    # (with another string-hash seed): no key may move, on either side or within one.
    first = split(*FOUR_WAY)
    again = split(*FOUR_WAY)
    landed = {key: first.pick_for_key(key) for key in KEYS}
    assert landed == {key: again.pick_for_key(key) for key in KEYS}
    assert set(landed.values()) == {name for name, _, _ in FOUR_WAY}
    assert in_fresh_process("1")["rebuilt"] == landed
    assert in_fresh_process("2")["rebuilt"] == landed


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
