"""Path normalisation, route patterns and their precedence.

A request is routed on its *normalised* path and forwarded with that same path, so the gateway
and the backend can never read one request as two different paths. This module owns that rule
(see docs/routing.md, "Path normalisation") and the pattern language of the routing table. It
knows nothing of YAML, backends or HTTP beyond the bytes of a request target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

_HEX = b"0123456789ABCDEFabcdef"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stand unencoded in a normalised path: pchar (RFC 3986 §3.3) and "/".
_ALLOWED_RAW = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: A path normalisation leaves as it is: segments of pchar other than '%' and ';', none empty
#: and none starting with '.' (so no dot segment), and at most a trailing '/'.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)*/?")


class BadPath(ValueError):
    """A request path the gateway refuses (answered 400 ``bad_request``)."""


def _encode_byte(byte: int) -> str:
    return f"%{byte:02X}"


def normalise_path(raw: bytes) -> str:
    """The normalised form of a request path (without the query), or :class:`BadPath`.

    - escapes of unreserved characters are decoded, other escapes get upper-case hex;
    - bytes that may not stand raw in a path (non-ASCII, ``"``, ``<``, ...) are percent-encoded;
    - dot segments are resolved (also when written as ``%2E``) and repeated slashes merged;
    - refused: an encoded ``/`` or ``\\`` (``%2F``, ``%5C``), a raw ``\\``, control bytes raw or
      encoded, a ``%`` not followed by two hex digits, and an empty or dot segment carrying
      ``;`` parameters (``..;``, ``/;x/``), which servers that strip path parameters resolve.
    """
    if not raw.startswith(b"/"):
        raise BadPath("the request target must be a path starting with '/'")
    if _PLAIN.fullmatch(raw) is not None:
        # Most paths are already normal: only pchar, no escape, no empty, dot or ';' segment.
        return raw.decode("ascii")
    return normalise_slowly(raw)


def normalise_slowly(raw: bytes) -> str:
    """:func:`normalise_path` byte by byte, for a path that may need it."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # "%"
            if i + 2 >= n:
                raise BadPath("'%' must be followed by two hex digits")
            hi, lo = raw[i + 1], raw[i + 2]
            if hi not in _HEX or lo not in _HEX:
                raise BadPath("'%' must be followed by two hex digits")
            decoded = int(raw[i + 1 : i + 3], 16)
            if decoded in (0x2F, 0x5C):
                raise BadPath("encoded '/' or '\\' in the path is not allowed")
            if decoded < 0x20 or decoded == 0x7F:
                raise BadPath("encoded control characters in the path are not allowed")
            out.append(chr(decoded) if decoded in _UNRESERVED else _encode_byte(decoded))
            i += 3
            continue
        if byte < 0x20 or byte == 0x7F:
            raise BadPath("control characters in the path are not allowed")
        if byte == 0x5C:
            raise BadPath("'\\' in the path is not allowed")
        out.append(chr(byte) if byte in _ALLOWED_RAW else _encode_byte(byte))
        i += 1
    return _resolve_segments("".join(out))


def _resolve_segments(path: str) -> str:
    parts = path.split("/")[1:]
    stack: list[str] = []
    trailing = False
    for part in parts:
        trailing = False
        base = part.split(";", 1)[0]
        if base != part and base in ("", ".", ".."):
            # Servers that strip path parameters would read this segment as empty or as a dot
            # segment, and so resolve the path to another route than the gateway did.
            raise BadPath("an empty or dot segment with ';' parameters is not allowed")
        if base in (".", ".."):
            if base == ".." and stack:
                stack.pop()
            trailing = True
        elif part == "":
            trailing = True
        else:
            stack.append(part)
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")


def match_segments(path: str) -> tuple[str, ...]:
    """The segments routes are matched against: ``;`` parameters dropped, a trailing slash kept
    as a final empty segment. ``/`` has none."""
    if path == "/":
        return ()
    return tuple(part.split(";", 1)[0] for part in path[1:].split("/"))


class Seg(IntEnum):
    """Segment kinds, in order of precedence (lower wins)."""

    LITERAL = 0
    PARAM = 1
    GREEDY = 2
    OPEN_END = 3


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled ``match.path``: literal prefix, or a template of exact depth."""

    text: str
    kinds: tuple[Seg, ...]
    #: Literal text, or the parameter name for PARAM and GREEDY.
    values: tuple[str, ...]
    #: Compared lexicographically: a lower rank is more specific.
    rank: tuple[int, ...]

    @property
    def is_prefix(self) -> bool:
        return Seg.PARAM not in self.kinds and Seg.GREEDY not in self.kinds

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        """Captured parameters when ``segments`` match, else None."""
        kinds, values = self.kinds, self.values
        count = len(kinds)
        if len(segments) < count:
            return None
        captures: dict[str, str] = {}
        for index in range(count):
            kind, value, segment = kinds[index], values[index], segments[index]
            if kind is Seg.LITERAL:
                if segment != value:
                    return None
            elif kind is Seg.PARAM:
                if not segment:
                    return None
                captures[value] = segment
            else:  # GREEDY, always last
                rest = "/".join(segments[index:])
                if not rest:
                    return None
                captures[value] = rest
                return captures
        if len(segments) > count and not self.is_prefix:
            return None
        return captures


def compile_pattern(path: str) -> Pattern:
    """Compile a configured path; ValueError says what is wrong with it."""
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    kinds: list[Seg] = []
    values: list[str] = []
    names: set[str] = set()
    raw_segments = [s for s in path[1:].split("/") if s]
    for position, raw in enumerate(raw_segments):
        if "{" in raw or "}" in raw:
            if not (raw.startswith("{") and raw.endswith("}")):
                raise ValueError(f"segment {raw!r}: a parameter must fill the whole segment")
            name = raw[1:-1]
            kind = Seg.PARAM
            if name.endswith("+"):
                name, kind = name[:-1], Seg.GREEDY
                if position != len(raw_segments) - 1:
                    raise ValueError(f"{raw!r}: a greedy parameter must be the last segment")
            if not _PARAM_NAME.match(name):
                raise ValueError(f"{raw!r}: a parameter name is letters, digits and '_'")
            if name in names:
                raise ValueError(f"{raw!r}: parameter {name!r} appears twice")
            names.add(name)
            kinds.append(kind)
            values.append(name)
            continue
        if ";" in raw:
            raise ValueError(f"segment {raw!r}: ';' starts path parameters, which matching ignores")
        try:
            normal = normalise_path(b"/" + raw.encode("utf-8"))
        except BadPath as exc:
            raise ValueError(f"segment {raw!r}: {exc}") from None
        if normal == "/" or "/" in normal[1:]:
            raise ValueError(f"segment {raw!r}: dot segments are not allowed")
        kinds.append(Seg.LITERAL)
        values.append(normal[1:])
    rank = [int(k) for k in kinds]
    if Seg.PARAM not in kinds and Seg.GREEDY not in kinds:
        rank.append(int(Seg.OPEN_END))
    return Pattern(path, tuple(kinds), tuple(values), tuple(rank))
