"""Path rewrites (docs/routing.md, "Rewriting paths"): what a route's ``rewrite`` makes of the
normalised path before a ``url`` backend gets it.

A rewrite is compiled once, when the table loads, from the route's pattern and its ``rewrite``
key; per request it is string joins only. ``prefix`` replaces the route's literal prefix on
segment boundaries; ``path`` is a template of literal segments and the route's captures, which
are inserted as they stand in the normalised path. Neither can make a path the gateway would not
route on: literal segments are normalised at load (no dot segment, no empty one), and a capture
is one or more whole, non-empty segments of a path that was already normal, so no ``..``, no
``//`` and no encoded slash can come from one.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.matching import BadPath, Pattern, Seg, compile_pattern, normalise_path


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A compiled ``rewrite``: either a prefix replacement or a template."""

    #: The route's literal prefix as it stands in a normalised path ("" for "/"), replaced by
    #: ``replacement`` ("" for "/").
    prefix: str | None = None
    replacement: str = ""
    #: Template parts: literal text, or the name of a capture (its segments inserted).
    parts: tuple[tuple[bool, str], ...] = ()

    def apply(self, path: str, captures: dict[str, str]) -> tuple[str, str | None]:
        """The path a url backend gets, and the ``X-Forwarded-Prefix`` it is told (the part of
        the client's path a prefix rewrite replaced; None for a template, or when nothing was
        replaced)."""
        prefix = self.prefix
        if prefix is not None:
            rest = path[len(prefix) :]
            return (self.replacement + rest) or "/", prefix or None
        out = []
        for is_capture, value in self.parts:
            out.append(captures[value] if is_capture else value)
        return "".join(out), None


def compile_rewrite(pattern: Pattern, prefix: str | None, template: str | None) -> Rewrite:
    """The rewrite of a route with ``pattern``; ValueError says what is wrong (the loader
    reports it with the key's location)."""
    if prefix is not None:
        if not pattern.is_prefix:
            raise ValueError(
                "'prefix' needs a literal path to replace; this route's path is a template "
                "(use 'path' with its captures)"
            )
        replacement = _normal(prefix, "prefix")
        matched = "".join("/" + value for value in pattern.values)
        return Rewrite(prefix=matched, replacement=replacement.rstrip("/"))
    assert template is not None
    if not template.startswith("/"):
        raise ValueError("must start with '/'")
    compiled = compile_pattern(template)
    captured = {
        value: kind
        for value, kind in zip(pattern.values, pattern.kinds, strict=True)
        if kind is not Seg.LITERAL
    }
    names = sorted(captured)
    parts: list[tuple[bool, str]] = []
    for kind, value in zip(compiled.kinds, compiled.values, strict=True):
        parts.append((False, "/"))
        if kind is Seg.LITERAL:
            parts.append((False, value))
            continue
        if value not in captured:
            known = ", ".join("{" + n + "}" for n in names) or "none"
            raise ValueError(f"{{{value}}} is not a capture of the route (its captures: {known})")
        if captured[value] is not kind:
            written = "{" + value + ("+}" if captured[value] is Seg.GREEDY else "}")
            raise ValueError(f"{{{value}}} is captured as {written}: write it so")
        parts.append((True, value))
    if template.endswith("/") and len(template) > 1:
        parts.append((False, "/"))
    if not parts:
        parts.append((False, "/"))
    return Rewrite(parts=tuple(_merged(parts)))


def _normal(path: str, key: str) -> str:
    """A configured literal path in its normal form: no template, no dot or empty segment."""
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    if "{" in path or "}" in path:
        raise ValueError(f"'{key}' is a literal path; a template goes in 'path'")
    try:
        normal = normalise_path(path.encode("utf-8"))
    except BadPath as exc:
        raise ValueError(str(exc)) from None
    segments = path.rstrip("/").split("/")[1:]
    if any(s in ("", ".", "..") or s.lower() in ("%2e", "%2e%2e") for s in segments):
        raise ValueError("empty and dot segments are not allowed")
    return normal


def _merged(parts: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
    """Adjacent literal parts joined, so a request pays one join per capture."""
    merged: list[tuple[bool, str]] = []
    for is_capture, value in parts:
        if merged and not is_capture and not merged[-1][0]:
            merged[-1] = (False, merged[-1][1] + value)
        else:
            merged.append((is_capture, value))
    return merged
