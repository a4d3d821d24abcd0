"""The field tables: how a mapping is read against one, and that config/routes.example.yaml,
the annotated reference of every key, shows every declared key and states its defaults right."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.table import (
    authorizers,
    backends,
    fields,
    headermaps,
    loader,
    resilience,
    rollout,
    routing,
    shadowing,
)
from proxy.table.fields import Field, Fields, Values
from proxy.table.loader import parse_table
from proxy.table.yamlnodes import NodeReader

EXAMPLE = Path(__file__).parents[2] / "config" / "routes.example.yaml"

COUNT = Field("count", fields.integer, default=5, minimum=0, maximum=10)
RATIO = Field("ratio", fields.number, default=0.5, minimum=0, maximum=1, above_minimum=True)
SHARE = Field("share", fields.number, default=0.25, minimum=0, maximum=1)
FLAG = Field("flag", fields.boolean, default=True)
WAIT = Field("wait", fields.duration, default=3.0, maximum=60.0)
NAME = Field("name", fields.string, required=True)
TABLE = (COUNT, RATIO, SHARE, FLAG, WAIT, NAME)


def read(text: str) -> tuple[Values | None, list[str]]:
    reader = NodeReader("t.yaml")
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    assert node is not None
    got = fields.read(reader, "thing", node, TABLE)
    return got, [str(p) for p in reader.problems]


def test_a_value_that_validates_is_kept_even_when_it_is_falsy() -> None:
    got, problems = read("{count: 0, share: 0, flag: false, name: ''}")
    assert problems == []
    assert got is not None
    assert (got[COUNT], got[SHARE], got[FLAG], got.get(NAME)) == (0, 0.0, False, "")


def test_a_key_left_out_takes_the_declared_default() -> None:
    got, problems = read("{name: x}")
    assert problems == []
    assert got is not None
    assert (got[COUNT], got[RATIO], got[SHARE], got[FLAG], got[WAIT]) == (5, 0.5, 0.25, True, 3.0)
    assert COUNT not in got
    assert NAME in got


def test_every_problem_is_reported_and_a_bad_value_reads_as_the_default() -> None:
    got, problems = read("{count: 11, ratio: 0, flag: 1, wait: 0s, other: 1}")
    assert problems == [
        "t.yaml:1:42: thing: unknown key 'other' (allowed: count, flag, name, ratio, share, wait)",
        "t.yaml:1:9: thing.count: 11 is out of range (0 to 10)",
        "t.yaml:1:20: thing.ratio: must be above 0",
        "t.yaml:1:29: thing.flag: expected true or false, got an integer",
        "t.yaml:1:38: thing.wait: duration '0s' is out of range (more than 0, at most 60s)",
        "t.yaml:1:1: thing: missing required key 'name'",
    ]
    assert got is not None
    assert (got[COUNT], got[RATIO], got[FLAG], got[WAIT], got.get(NAME)) == (
        5,
        0.5,
        True,
        3.0,
        None,
    )
    assert COUNT in got  # given, though not acceptable


def test_a_field_without_default_must_be_read_with_get() -> None:
    got, _ = read("{}")
    assert got is not None
    with pytest.raises(LookupError):
        got[NAME]


def test_not_a_mapping() -> None:
    got, problems = read("[1]")
    assert got is None
    assert problems == ["t.yaml:1:1: thing: expected a mapping, got a list"]


# The reference file: which field table each of its mappings is read against.


def _entries(node: Node) -> Iterator[tuple[ScalarNode, Node]]:
    assert isinstance(node, MappingNode)
    for key, value in node.value:
        assert isinstance(key, ScalarNode)
        yield key, value


def _child(node: Node, key: str) -> Node | None:
    return next((value for k, value in _entries(node) if k.value == key), None)


def _mappings(root: Node) -> Iterator[tuple[str, Fields, MappingNode]]:
    """(path, field table, mapping node) for every mapping of the example."""

    def found(path: str, table: Fields, node: Node | None) -> Iterator[tuple[str, Fields, Any]]:
        if isinstance(node, MappingNode):
            yield path, table, node

    yield from found("table", loader.TABLE_FIELDS, root)
    for _, backend in _entries(_child(root, "backends") or MappingNode("", [])):
        (target,) = [k.value for k, _ in _entries(backend) if k.value in backends.BACKEND_FIELDS]
        yield from found("backends.*", backends.BACKEND_FIELDS[target], backend)
        breaker = _child(backend, "circuit_breaker")
        yield from found("backends.*.circuit_breaker", resilience.CIRCUIT_BREAKER_FIELDS, breaker)
    for _, authorizer in _entries(_child(root, "authorizers") or MappingNode("", [])):
        yield from found("authorizers.*", authorizers.AUTHORIZER_FIELDS, authorizer)
    routes = _child(root, "routes")
    assert isinstance(routes, SequenceNode)
    for route in routes.value:
        yield from found("routes[*]", routing.ROUTE_FIELDS, route)
        for key, table in (
            ("match", routing.MATCH_FIELDS),
            ("sticky", routing.STICKY_FIELDS),
            ("fallback", resilience.FALLBACK_FIELDS),
            ("retries", resilience.RETRIES_FIELDS),
            ("shadow", shadowing.SHADOW_FIELDS),
            ("rewrite", routing.REWRITE_FIELDS),
            ("request_headers", headermaps.HEADER_MAP_FIELDS),
            ("response_headers", headermaps.HEADER_MAP_FIELDS),
            ("rollout", rollout.ROLLOUT_FIELDS),
        ):
            yield from found(f"routes[*].{key}", table, _child(route, key))
        retries = _child(route, "retries")
        budget = _child(retries, "budget") if retries is not None else None
        yield from found("routes[*].retries.budget", resilience.BUDGET_FIELDS, budget)


def _declared_tables() -> list[Fields]:
    """Every field table the table modules declare (``*_FIELDS``)."""
    tables: list[Fields] = []
    for module in (
        loader,
        backends,
        authorizers,
        routing,
        resilience,
        shadowing,
        headermaps,
        rollout,
    ):
        for name, value in vars(module).items():
            if name.endswith("_FIELDS") and isinstance(value, tuple):
                tables.append(value)
            elif name.endswith("_FIELDS"):
                tables.extend(value.values())
    return tables


TEXT = EXAMPLE.read_text()
LINES = TEXT.splitlines()
ROOT = yaml.compose(TEXT, Loader=yaml.SafeLoader)
assert ROOT is not None
MAPPINGS = list(_mappings(ROOT))


def _comment(line: str) -> str | None:
    match = re.search(r"(?:^|\s)#(.*)", line)
    return None if match is None else match.group(1)


def test_the_example_is_a_valid_table() -> None:
    parse_table(EXAMPLE.read_bytes(), str(EXAMPLE))


def test_every_field_table_is_found_in_the_example() -> None:
    walked = {id(table) for _, table, _ in MAPPINGS}
    missing = [fields.keys(table) for table in _declared_tables() if id(table) not in walked]
    assert missing == []


def test_every_declared_key_appears_in_the_example() -> None:
    """Each key is a key of a mapping at its place, or, where the example cannot show it (a
    sticky's ``header`` beside its ``cookie``), named as `` `key: `` in a comment there."""
    declared: dict[str, set[str]] = {}
    shown: dict[str, set[str]] = {}
    for path, table, node in MAPPINGS:
        declared.setdefault(path, set()).update(fields.keys(table))
        keys = shown.setdefault(path, set())
        keys.update(str(key.value) for key, _ in _entries(node))
        for line in LINES[node.start_mark.line : node.end_mark.line + 1]:
            keys.update(re.findall(r"`(\w+):", _comment(line) or ""))
    missing = {path: sorted(keys - shown[path]) for path, keys in declared.items()}
    assert {path: keys for path, keys in missing.items() if keys} == {}


#: "default 30s", "default 256 KiB", "default [content-type]", "default GET, HEAD, OPTIONS".
_DEFAULT = re.compile(r"\bdefault (\[[^\]]*\]|(?:[A-Z]+, )+[A-Z]+\b|[^\s,;:)]+)( KiB| MiB)?")
_UNITS = {" KiB": 1024, " MiB": 1024 * 1024}


def _stated_defaults() -> Iterator[tuple[str, Field[Any], Node]]:
    """(key's dotted place, field, the default the example states for it, as a node)."""
    for path, table, node in MAPPINGS:
        by_key = {field.key: field for field in table}
        for key, value in _entries(node):
            field = by_key[str(key.value)]
            if isinstance(value, MappingNode):
                continue  # a nested table: its own keys state its defaults
            line = key.start_mark.line
            comment = _comment(LINES[line])
            if comment is None:
                continue
            # A key's comment goes on over the comment-only lines below it.
            block = [comment]
            for below in LINES[line + 1 :]:
                if not below.lstrip().startswith("#"):
                    break
                block.append(below.lstrip()[1:])
            text = " ".join(block)
            where = f"{path}.{key.value} (line {line + 1})"
            if re.search(r"\bthe default\b", text):
                yield where, field, value
            elif match := _DEFAULT.search(text):
                stated, unit = match.group(1).rstrip("."), match.group(2)
                if unit:
                    stated = str(int(stated) * _UNITS[unit])
                elif re.fullmatch(r"(?:[A-Z]+, )+[A-Z]+", stated):
                    stated = f"[{stated}]"
                node = yaml.compose(stated, Loader=yaml.SafeLoader)
                assert node is not None
                yield where, field, node


STATED = list(_stated_defaults())


def test_the_example_states_defaults() -> None:
    # Not an empty check: the example states the defaults of most keys.
    assert len(STATED) >= 15


@pytest.mark.parametrize(("where", "field", "node"), STATED, ids=[w for w, _, _ in STATED])
def test_every_default_the_example_states_is_the_declared_one(
    where: str, field: Field[Any], node: Node
) -> None:
    reader = NodeReader(str(EXAMPLE))
    stated = field.read(reader, where, node, field)
    assert [str(p) for p in reader.problems] == []
    assert stated == field.default
