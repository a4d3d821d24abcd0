"""The loader under arbitrary input: whatever the bytes, it returns a table or raises a
TableError whose every problem names a line and column inside the input; it never crashes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.table.loader import TableError, parse_table

VALID = b"""\
version: 1
backends:
  monolith: {url: "http://127.0.0.1:8081", kind: legacy, timeout: 30s}
  catalog: {url: "http://127.0.0.1:9000", max_concurrency: 8, circuit_breaker: {probes: 2}}
routes:
  - {name: all, match: {path: /}, backend: monolith}
  - name: catalog
    match: {path: "/products/{id}", methods: [GET], host: "*.example.com", headers: {X-A: "1"}}
    split: {catalog: 25, monolith: 75}
    sticky: {cookie: sid, set: true}
    shadow: {backend: catalog, percent: 5, max_body: 0}
    retries: {attempts: 1, budget: {ratio: 0.5}}
"""

TOKENS = [
    b"version",
    b"backends",
    b"routes",
    b"url",
    b"split",
    b"backend",
    b"match",
    b"path",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"-",
    b" ",
    b"\n",
    b"  ",
    b"&a",
    b"*a",
    b"!!python/obj",
    b"'",
    b'"',
    b"%",
    b"/",
    b"{id}",
    b"100",
    b"33.333",
    b"30s",
    b"\t",
    b"\x00",
    b"#",
    # Refused by PyYAML's reader (a control character, a byte that is not UTF-8, a BOM that
    # makes the rest UTF-16): each must still be a problem at a line and column.
    b"\x01",
    b"\xff",
    b"\xff\xfe",
    # Nesting deep enough to meet the depth limit.
    b"[" * 40,
    # Values YAML reads as numbers or flags that a table does not take.
    b"!!int x",
    b"!!bool x",
    b"0x1",
    b".inf",
    b"0",
]


def check(data: bytes) -> None:
    try:
        parse_table(data, "t.yaml")
        return
    except TableError as exc:
        problems = exc.problems
    assert problems
    # YAML breaks lines at CR, LF and CR LF (and NEL, LS, PS once decoded): a location may
    # be on any of those lines, or just past the last.
    text = data.decode("utf-8", "replace")
    lines = len(re.split("\r\n|[\r\n\x85\u2028\u2029]", text)) + 1
    for problem in problems:
        assert problem.location.file == "t.yaml"
        assert 1 <= problem.location.line <= lines
        assert problem.location.column >= 1
        assert problem.message


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_loader(data: bytes) -> None:
    check(data)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join))
def test_yaml_shaped_noise_never_crashes_the_loader(data: bytes) -> None:
    check(data)


@settings(max_examples=500)
@given(st.integers(0, len(VALID) - 1), st.integers(0, len(VALID)), st.sampled_from(TOKENS))
def test_mutations_of_a_valid_table_never_crash_the_loader(
    start: int, length: int, token: bytes
) -> None:
    check(VALID[:start] + token + VALID[start + length % 20 :])
