"""Path rewrites (proxy/rewrite.py): exact examples, the errors a table gets, and properties
over any matched request: the rewritten path is a normalised path, captures are inserted
exactly, and nothing outside the template can appear (no ``..``, no ``//``, no encoded slash
coming from a capture)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.matching import compile_pattern, match_segments, normalise_path
from proxy.rewrite import compile_rewrite


def rewritten(route: str, path: str, prefix: str | None = None, template: str | None = None):
    pattern = compile_pattern(route)
    captures = pattern.match(match_segments(path))
    assert captures is not None, f"{path} does not match {route}"
    return compile_rewrite(pattern, prefix, template).apply(path, captures)


@pytest.mark.parametrize(
    ("route", "path", "prefix", "expected"),
    [
        ("/shop/catalog", "/shop/catalog/7", "/v2/items", ("/v2/items/7", "/shop/catalog")),
        ("/shop/catalog", "/shop/catalog", "/v2/items", ("/v2/items", "/shop/catalog")),
        ("/shop/catalog", "/shop/catalog/", "/v2/items", ("/v2/items/", "/shop/catalog")),
        ("/shop/catalog", "/shop/catalog/7", "/v2/items/", ("/v2/items/7", "/shop/catalog")),
        ("/shop/catalog", "/shop/catalog/a/b", "/", ("/a/b", "/shop/catalog")),
        ("/shop/catalog", "/shop/catalog", "/", ("/", "/shop/catalog")),
        ("/", "/a/b", "/legacy", ("/legacy/a/b", None)),
        ("/", "/", "/legacy", ("/legacy/", None)),
        ("/caf%C3%A9", "/caf%C3%A9/x", "/cafe", ("/cafe/x", "/caf%C3%A9")),
    ],
)
def test_a_prefix_replaces_the_routes_literal_prefix(
    route: str, path: str, prefix: str, expected: tuple[str, str | None]
) -> None:
    assert rewritten(route, path, prefix=prefix) == expected


@pytest.mark.parametrize(
    ("route", "path", "template", "expected"),
    [
        ("/api/v1/orders/{id}", "/api/v1/orders/42", "/orders/{id}", "/orders/42"),
        ("/u/{user}/o/{id}", "/u/ann/o/7", "/orders/{id}/by/{user}", "/orders/7/by/ann"),
        ("/files/{rest+}", "/files/a/b/c.txt", "/store/{rest+}", "/store/a/b/c.txt"),
        ("/files/{rest+}", "/files/a/b/", "/store/{rest+}", "/store/a/b/"),
        ("/a/{id}", "/a/caf%C3%A9", "/b/{id}/", "/b/caf%C3%A9/"),
        ("/a/{id}", "/a/1", "/", "/"),
    ],
)
def test_a_template_inserts_the_captures_as_they_stand(
    route: str, path: str, template: str, expected: str
) -> None:
    assert rewritten(route, path, template=template) == (expected, None)


@pytest.mark.parametrize(
    ("route", "prefix", "template", "message"),
    [
        ("/a/{id}", "/b", None, "needs a literal path to replace"),
        ("/a", "/b/{x}", None, "a template goes in 'path'"),
        ("/a", "b", None, "must start with '/'"),
        ("/a", "/b/../c", None, "dot segments are not allowed"),
        ("/a", "/b%2Fc", None, "encoded"),
        ("/a/{id}", None, "/b/{other}", "{other} is not a capture of the route (its captures: {"),
        ("/a/{id}", None, "/b/../{id}", "dot segments are not allowed"),
        ("/a", None, "/b/{id}", "{id} is not a capture of the route (its captures: none)"),
        ("/a/{rest+}", None, "/b/{rest}", "{rest} is captured as {rest+}: write it so"),
        ("/a/{id}", None, "/b/{id+}", "{id} is captured as {id}: write it so"),
        ("/a/{rest+}", None, "/b/{rest+}/c", "a greedy parameter must be the last segment"),
        ("/a/{id}", None, "b/{id}", "must start with '/'"),
    ],
)  # fmt: skip
def test_a_rewrite_that_cannot_work_is_refused(
    route: str, prefix: str | None, template: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_rewrite(compile_pattern(route), prefix, template)


# ---- properties --------------------------------------------------------------------------

SEGMENT = st.text("abcxyz019-._~%C3A9!$&'()*+,=:@", min_size=1, max_size=8)
NAMES = st.sampled_from(["a", "b", "c", "id", "rest"])


@st.composite
def matched(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    """A route template, a normalised path it matches, and the captures."""
    literal = draw(st.lists(st.sampled_from(["api", "v1", "orders", "x"]), max_size=3))
    names = draw(st.lists(NAMES, unique=True, min_size=1, max_size=3))
    greedy = draw(st.booleans())
    route = "/" + "/".join([*literal, *("{" + n + "}" for n in names)])
    if greedy:
        route += "/{tail+}"
    raw = "/" + "/".join([*literal, *(draw(SEGMENT) for _ in names)])
    if greedy:
        raw += "/" + "/".join(draw(st.lists(SEGMENT, min_size=1, max_size=3)))
    try:
        path = normalise_path(raw.encode())
    except ValueError:
        path = "/" + "/".join([*literal, *("v" for _ in names)]) + ("/t" if greedy else "")
    captures = compile_pattern(route).match(match_segments(path))
    if captures is None:  # a segment normalised away (".", "..") : use plain ones
        path = "/" + "/".join([*literal, *("v" for _ in names)]) + ("/t" if greedy else "")
        captures = compile_pattern(route).match(match_segments(path))
    assert captures is not None
    return route, path, captures


@given(matched(), st.data())
def test_a_template_makes_a_normal_path_with_the_captures_exactly(
    case: tuple[str, str, dict[str, str]], data: st.DataObject
) -> None:
    route, path, captures = case
    params = [n for n in captures if n != "tail"]
    chosen = data.draw(st.lists(st.sampled_from(params), unique=True, max_size=len(params)))
    literals = data.draw(st.lists(st.sampled_from(["new", "v2", "caf%C3%A9", ""]), max_size=3))
    template = "/" + "/".join([*literals, *("{" + n + "}" for n in chosen)])
    if "tail" in captures and data.draw(st.booleans()):
        template += "/{tail+}"
        chosen.append("tail")
    out, replaced = compile_rewrite(compile_pattern(route), None, template).apply(path, captures)
    assert replaced is None
    assert normalise_path(out.encode()) == out  # already normal: nothing to resolve
    assert "//" not in out
    segments = out.split("/")[1:]
    assert ".." not in segments
    assert "." not in segments
    assert "%2F" not in out.upper()
    assert "%5C" not in out.upper()
    # Exactly the template: its literal segments (an empty one dropped), then each capture as
    # it stood, in order, and the template's trailing slash.
    expected = "/" + "/".join([*(s for s in literals if s), *(captures[n] for n in chosen)])
    if template.endswith("/") and expected != "/":
        expected += "/"  # a template's trailing slash is kept
    assert out == expected


@given(matched(), st.sampled_from(["/", "/v2", "/v2/items", "/a/b/c/"]))
def test_a_prefix_keeps_everything_after_the_prefix_byte_for_byte(
    case: tuple[str, str, dict[str, str]], prefix: str
) -> None:
    route, path, _ = case
    literal = route.split("/{")[0] or "/"
    pattern = compile_pattern(literal)
    captures = pattern.match(match_segments(path))
    assert captures is not None
    out, replaced = compile_rewrite(pattern, prefix, None).apply(path, captures)
    matched_prefix = "" if literal == "/" else literal
    assert replaced == (matched_prefix or None)
    rest = path[len(matched_prefix) :]
    assert out == (prefix.rstrip("/") + rest or "/")
    assert normalise_path(out.encode()) == out
