"""Structural JSON comparison and the path patterns that ignore parts of it."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.jsondiff import PathPatterns, differences, general

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


def shuffled(document: Any, rng: random.Random) -> Any:
    """The same document with every object's keys in another order."""
    if isinstance(document, dict):
        items = list(document.items())
        rng.shuffle(items)
        return {key: shuffled(value, rng) for key, value in items}
    if isinstance(document, list):
        return [shuffled(value, rng) for value in document]
    return document


@given(documents, st.randoms())
def test_key_order_never_matters(document: Any, rng: random.Random) -> None:
    assert list(differences(document, shuffled(document, rng))) == []
    # and a round trip through JSON text changes nothing either
    assert list(differences(document, json.loads(json.dumps(document)))) == []


@given(documents, documents)
def test_differences_are_empty_exactly_when_documents_are_equal(a: Any, b: Any) -> None:
    equal = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (list(differences(a, b)) == []) == equal


def test_paths_name_the_differing_leaves() -> None:
    primary = {"a": {"b": [1, 2, {"c": "x"}]}, "odd key": 1, "n": 1, "t": True}
    shadow = {"a": {"b": [1, 3, {"c": "y"}, 4]}, "odd key": 2, "n": 1.0, "t": 1}
    found = sorted((d.path, d.primary, d.shadow) for d in differences(primary, shadow))
    assert [path for path, _, _ in found] == [
        "$.a.b[1]",
        "$.a.b[2].c",
        "$.a.b[3]",
        "$.t",
        '$["odd key"]',
    ]


def test_patterns() -> None:
    patterns = PathPatterns(["$.generated_at", "$.items[*].id", "$.*.etag", "$..updated"])
    assert patterns.matches("$.generated_at")
    assert patterns.matches("$.generated_at.nested")  # everything under it
    assert patterns.matches("$.items[0].id")
    assert patterns.matches("$.items[12].id")
    assert not patterns.matches("$.items[0].name")
    assert patterns.matches("$.meta.etag")
    assert patterns.matches("$.updated")
    assert patterns.matches("$.a[1].b.updated")
    assert not patterns.matches("$.updated_at")
    assert not patterns.matches("$.generated")
    assert not PathPatterns([]).matches("$.x")
    assert PathPatterns(['$["odd key"]']).matches('$["odd key"]')


def test_general_replaces_indexes() -> None:
    assert general("$.items[3].price[0]") == "$.items[*].price[*]"
