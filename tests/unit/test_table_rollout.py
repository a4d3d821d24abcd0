"""A route's ``rollout`` (proxy/table/rollout.py): what is read, and each rule with its
FILE:LINE:COL."""

from __future__ import annotations

import pytest

from proxy.table.loader import TableError, parse_table
from proxy.table.model import Rollout


def table(split: str, rollout: str) -> bytes:
    return (
        "version: 1\n"
        "backends:\n"
        "  monolith: {url: 'http://127.0.0.1:1', kind: legacy}\n"
        "  catalog: {url: 'http://127.0.0.1:2'}\n"
        "  other: {url: 'http://127.0.0.1:3'}\n"
        "routes:\n"
        f"  - name: r\n    match: {{path: /}}\n    {split}\n    rollout: {rollout}\n"
    ).encode()


def problems(data: bytes) -> list[str]:
    with pytest.raises(TableError) as caught:
        parse_table(data, "t.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_rollout_is_read_with_its_defaults() -> None:
    parsed = parse_table(
        table("split: {catalog: 25, monolith: 75}", "{to: catalog, steps: [5, 25, 100]}"), "t"
    )
    assert parsed.routes[0].rollout == Rollout(
        to="catalog",
        steps=(500, 2500, 10000),
        every=1800.0,
        min_requests=100,
        max_error_ratio=0.01,
        max_error_ratio_vs_legacy=2.0,
        max_p99_vs_legacy=None,
        min_shadow_parity=None,
        on_failure="rollback",
    )
    assert parsed.routes[0].rollout.step_of(2500) == 1
    assert parsed.routes[0].rollout.step_of(0) == -1


@pytest.mark.parametrize(
    ("split", "rollout", "expected"),
    [
        (
            "backend: catalog",
            "{to: catalog, steps: [100]}",
            "t.yaml:10:14: routes[0] (r).rollout: applies only to a route with a split",
        ),
        (
            "split: {catalog: 25, monolith: 75}",
            "{to: monolith, steps: [25, 100]}",
            "t.yaml:10:19: routes[0] (r).rollout.to: 'monolith' is a legacy backend; "
            "ramp a new one",
        ),
        (
            "split: {catalog: 25, monolith: 75}",
            "{to: other, steps: [25, 100]}",
            "t.yaml:10:19: routes[0] (r).rollout.to: 'other' is not a backend of the route's split",
        ),
        (
            "split: {catalog: 25, other: 75}",
            "{to: catalog, steps: [25, 100]}",
            "t.yaml:10:14: routes[0] (r).rollout: the rest of the split must be legacy "
            "(other is new)",
        ),
        (
            "split: {catalog: 20, monolith: 80}",
            "{to: catalog, steps: [25, 100]}",
            "t.yaml:10:19: routes[0] (r).rollout.to: 'catalog' has 20% in the split, which is "
            "not 0 or one of the steps (25, 100)",
        ),
        (
            "split: {catalog: 25, monolith: 75}",
            "{to: catalog, steps: [25, 10, 100]}",
            "t.yaml:10:40: routes[0] (r).rollout.steps[1]: steps must ascend",
        ),
        (
            "split: {catalog: 25, monolith: 75}",
            "{to: catalog, steps: [25, 50]}",
            "t.yaml:10:35: routes[0] (r).rollout.steps: the last step must be 100",
        ),
        (
            "split: {catalog: 0, monolith: 100}",
            "{to: catalog, steps: [0, 100]}",
            "t.yaml:10:36: routes[0] (r).rollout.steps[0]: a step is more than 0",
        ),
        (
            "split: {catalog: 0, monolith: 100}",
            "{to: catalog, steps: [100], on_failure: pause}",
            "t.yaml:10:54: routes[0] (r).rollout.on_failure: 'pause' is not one of rollback, hold",
        ),
    ],
)
def test_each_rule_is_reported_where_it_is(split: str, rollout: str, expected: str) -> None:
    found = problems(table(split, rollout))
    assert found == [expected]
