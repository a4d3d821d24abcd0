"""The rollout's decision for one route's step, from what happened in it: a pure function of
the route's ``rollout`` settings, the step's age and its counts (docs/rollout.md, "Gates").

The counts are a :class:`Window`: the new backend's and the legacy backends' requests, 5xx
answers (the gateway's own 502/503/504 included) and latency buckets since the step began,
and the shadow comparisons of the route's shadow when it mirrors to the new backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.table.model import WEIGHT_SCALE, Rollout

PROMOTE, HOLD, ROLLBACK, COMPLETE = "promote", "hold", "rollback", "complete"


@dataclass(frozen=True, slots=True)
class Window:
    """What happened in a step, summed over every replica."""

    new_requests: float = 0.0
    new_errors: float = 0.0
    legacy_requests: float = 0.0
    legacy_errors: float = 0.0
    #: Cumulative latency buckets (upper bound in seconds, +inf included -> count).
    new_buckets: Mapping[float, float] = field(default_factory=dict)
    legacy_buckets: Mapping[float, float] = field(default_factory=dict)
    shadow_match: float = 0.0
    shadow_mismatch: float = 0.0

    @property
    def new_error_ratio(self) -> float:
        return self.new_errors / self.new_requests if self.new_requests else 0.0

    @property
    def legacy_error_ratio(self) -> float | None:
        return self.legacy_errors / self.legacy_requests if self.legacy_requests else None


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    reason: str
    #: The weight ``to`` gets (basis points); the current one for hold and complete.
    weight: int
    #: The numbers judged, and the thresholds they were judged against.
    evidence: dict[str, float | str | None]
    #: Which rule decided: ``every``, ``min_requests``, ``no_comparisons``, a failing gate's
    #: key (``max_error_ratio``, ...), ``passed`` or ``complete``.
    rule: str = "passed"


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, interpolated linearly inside the
    bucket it falls in, as Prometheus's ``histogram_quantile`` does; None without
    observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    below, previous = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous  # the highest finite bound, as Prometheus answers
            inside = count - below
            start = previous
            return start + (bound - start) * ((rank - below) / inside if inside else 0.0)
        below, previous = count, bound
    return previous


def judge(rollout: Rollout, weight: int, age: float, window: Window, shadowed: bool) -> Decision:
    """The decision for a route whose ``to`` backend has ``weight`` (one of the steps) and
    whose step began ``age`` seconds ago; ``shadowed``: the route mirrors to ``to``."""
    evidence: dict[str, float | str | None] = {
        "step_age_s": round(age, 1),
        "every_s": rollout.every,
        "new_requests": window.new_requests,
        "min_requests": rollout.min_requests,
    }
    if weight == rollout.steps[-1]:
        return Decision(
            COMPLETE, f"{rollout.to} serves {weight / 100:g}%", weight, evidence, "complete"
        )
    if age < rollout.every:
        why = f"the step is {age:.0f}s old; promotion waits for {rollout.every:g}s"
        return Decision(HOLD, why, weight, evidence, "every")
    if window.new_requests < rollout.min_requests:
        why = (
            f"{rollout.to} served {window.new_requests:.0f} requests in the step; "
            f"{rollout.min_requests} are needed"
        )
        return Decision(HOLD, why, weight, evidence, "min_requests")
    failed = _failing_gate(rollout, window, shadowed, evidence)
    if failed is not None:
        rule, failure = failed
        if rule == "no_comparisons":
            return Decision(HOLD, failure, weight, evidence, rule)
        if rollout.on_failure == "rollback":
            return Decision(ROLLBACK, failure, 0, evidence, rule)
        return Decision(HOLD, f"{failure}; on_failure is hold", weight, evidence, rule)
    following = rollout.steps[rollout.steps.index(weight) + 1]
    why = f"every gate passed; {rollout.to} goes from {weight / 100:g}% to {following / 100:g}%"
    return Decision(PROMOTE, why, following, evidence)


def _failing_gate(
    rollout: Rollout, window: Window, shadowed: bool, evidence: dict[str, float | str | None]
) -> tuple[str, str] | None:
    """The first gate the window fails (its key, and why as a person says it), or None. The
    numbers go into ``evidence`` as they are judged."""
    ratio, legacy_ratio = window.new_error_ratio, window.legacy_error_ratio
    evidence.update(
        new_error_ratio=round(ratio, 6),
        max_error_ratio=rollout.max_error_ratio,
        legacy_error_ratio=None if legacy_ratio is None else round(legacy_ratio, 6),
        max_error_ratio_vs_legacy=rollout.max_error_ratio_vs_legacy,
    )
    if ratio > rollout.max_error_ratio:
        limit = rollout.max_error_ratio
        return "max_error_ratio", (
            f"{rollout.to} answered {ratio:.2%} 5xx, above max_error_ratio {limit:.2%}"
        )
    if legacy_ratio is not None and ratio > rollout.max_error_ratio_vs_legacy * legacy_ratio:
        return "max_error_ratio_vs_legacy", (
            f"{rollout.to} answered {ratio:.2%} 5xx, above {rollout.max_error_ratio_vs_legacy:g} "
            f"times legacy's {legacy_ratio:.2%}"
        )
    if rollout.max_p99_vs_legacy is not None:
        new_p99 = quantile(0.99, window.new_buckets)
        legacy_p99 = quantile(0.99, window.legacy_buckets)
        evidence.update(
            new_p99_s=new_p99, legacy_p99_s=legacy_p99, max_p99_vs_legacy=rollout.max_p99_vs_legacy
        )
        if (
            new_p99 is not None
            and legacy_p99 is not None
            and new_p99 > rollout.max_p99_vs_legacy * legacy_p99
        ):
            return "max_p99_vs_legacy", (
                f"{rollout.to}'s p99 is {new_p99 * 1000:.1f} ms, above "
                f"{rollout.max_p99_vs_legacy:g} times legacy's {legacy_p99 * 1000:.1f} ms"
            )
    if rollout.min_shadow_parity is not None and shadowed:
        compared = window.shadow_match + window.shadow_mismatch
        parity = window.shadow_match / compared if compared else None
        evidence.update(
            shadow_compared=compared,
            shadow_parity=parity,
            min_shadow_parity=rollout.min_shadow_parity,
        )
        if parity is None:
            return "no_comparisons", "the shadow has compared nothing in the step yet"
        if parity < rollout.min_shadow_parity:
            return "min_shadow_parity", (
                f"the shadow matched {parity:.2%} of {compared:.0f} comparisons, below "
                f"min_shadow_parity {rollout.min_shadow_parity:.2%}"
            )
    return None


def legacy_weights(split: Mapping[str, int], to: str, weight: int) -> dict[str, int]:
    """The split with ``to`` at ``weight``: the rest shared by the legacy backends in
    proportion to their weights now (equally when they all have 0), the remainder of the
    rounding to the first, so that the weights sum to 100%."""
    rest = WEIGHT_SCALE - weight
    legacy = [name for name in split if name != to]
    current = sum(split[name] for name in legacy)
    shares = {
        name: (rest * split[name] // current if current else rest // len(legacy)) for name in legacy
    }
    shares[legacy[0]] += rest - sum(shares.values())
    return {name: weight if name == to else shares[name] for name in split}
