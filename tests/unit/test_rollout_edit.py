"""Writing weights into a table (proxy/rollout/edit.py): only the numbers change, whatever
the layout around them, and the result is what the loader reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.rollout.edit import EditError, format_weight, set_weights, write_atomically
from proxy.table.loader import TableError

BLOCK = """\
version: 1   # the format
backends:
  monolith: {url: "http://127.0.0.1:8081", kind: legacy}
  catalog: {url: "http://127.0.0.1:8082"}
  old-catalog: {url: "http://127.0.0.1:8083", kind: legacy}
routes:
  - name: everything-else
    match: { path: / }
    split: { monolith: 100 }
  # The catalogue's ramp: edited by the controller.
  - name: catalog
    match: { path: /products }
    split:
      catalog: {catalog}       # the new one
      monolith: {monolith}   # the old one
      old-catalog:   {old}
    rollout: {{ to: catalog, steps: [5, 12.5, 33.33, 100] }}
"""
FLOW = """\
version: 1
backends:
  monolith: {{url: "http://127.0.0.1:8081", kind: legacy}}
  catalog: {{url: "http://127.0.0.1:8082"}}
  old-catalog: {{url: "http://127.0.0.1:8083", kind: legacy}}
routes:
  - {{name: catalog, match: {{path: /products}},
     split: {{catalog: {catalog}, monolith: {monolith}, old-catalog: {old}}},
     rollout: {{to: catalog, steps: [5, 12.5, 33.33, 100]}}}}
"""


def render(template: str, catalog: str, monolith: str, old: str) -> str:
    if template is BLOCK:
        return (
            template.replace("{catalog}", catalog)
            .replace("{monolith}", monolith)
            .replace("{old}", old)
            .replace("{{", "{")
            .replace("}}", "}")
        )
    return template.format(catalog=catalog, monolith=monolith, old=old)


@pytest.mark.parametrize("template", [BLOCK, FLOW], ids=["block", "flow"])
def test_only_the_weights_change(template: str) -> None:
    before = render(template, "5", "47.5", "47.5")
    after, table = set_weights(
        before, "t.yaml", "catalog", {"catalog": 1250, "monolith": 4375, "old-catalog": 4375}
    )
    assert after == render(template, "12.5", "43.75", "43.75")
    route = next(r for r in table.routes if r.name == "catalog")
    assert dict(route.split) == {"catalog": 1250, "monolith": 4375, "old-catalog": 4375}


weights = st.integers(0, 10000).flatmap(
    lambda new: st.integers(0, 10000 - new).map(lambda a: (new, a, 10000 - new - a))
)


@given(weights, weights)
def test_whatever_the_weights_the_diff_is_the_weights_alone(
    first: tuple[int, int, int], second: tuple[int, int, int]
) -> None:
    for template in (BLOCK, FLOW):
        text = render(template, *(format_weight(w) for w in first))
        names = ("catalog", "monolith", "old-catalog")
        try:
            after, _ = set_weights(text, "t.yaml", "catalog", dict(zip(names, second, strict=True)))
        except TableError:
            # Only a weight of `to` that is not a step is refused, by the loader.
            assert second[0] not in (0, 500, 1250, 3333, 10000)
            continue
        assert after == render(template, *(format_weight(w) for w in second))


def test_a_route_or_split_that_is_not_there_is_an_error() -> None:
    text = render(BLOCK, "5", "47.5", "47.5")
    with pytest.raises(EditError, match="no route 'nope'"):
        set_weights(text, "t.yaml", "nope", {})
    with pytest.raises(EditError, match="has no new weight"):
        set_weights(text, "t.yaml", "catalog", {"catalog": 500})


def test_a_result_the_loader_refuses_is_an_error_and_nothing_is_returned() -> None:
    text = render(BLOCK, "5", "47.5", "47.5")
    with pytest.raises(TableError, match="weights must sum to 100"):
        set_weights(text, "t.yaml", "catalog", {"catalog": 500, "monolith": 1, "old-catalog": 1})


def test_the_weights_are_written_as_a_person_writes_them() -> None:
    assert [format_weight(w) for w in (0, 500, 1250, 3333, 10000, 1)] == [
        "0", "5", "12.5", "33.33", "100", "0.01",
    ]  # fmt: skip


def test_writing_replaces_the_file_at_once_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    write_atomically(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # renamed into place, not written over
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yaml"]
