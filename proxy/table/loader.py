"""The only reader of routing-table YAML: parse safely, validate whole, report every problem.

:func:`read_yaml` (and :func:`read_yaml_file`) is the one way this project turns YAML bytes
into a node tree, for the routing table and for route tests alike; :func:`parse_table` then
reads the tree against the field tables (``TABLE_FIELDS`` here, the backends' in ``backends``,
the routes' in ``routing``, the authorizers' in ``authorizers``, the others in ``resilience``
and ``shadowing``) and checks the rules
between keys. The result is a :class:`~proxy.table.model.Table`, or a :class:`TableError`
listing every problem as ``FILE:LINE:COL: message``, so a user fixes a file in one pass.
Compiling the table (proxy/routes.py) is not done here.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path
from types import MappingProxyType

import yaml
from yaml.composer import ComposerError
from yaml.nodes import Node
from yaml.reader import ReaderError

from proxy.table import fields
from proxy.table.authorizers import read_authorizers
from proxy.table.backends import read_backends
from proxy.table.fields import Field
from proxy.table.model import Location, Table
from proxy.table.routing import read_routes
from proxy.table.yamlnodes import NodeReader, Problem

#: A routing table is small; a bigger file is a mistake or an attack on the parser.
MAX_TABLE_BYTES = 1024 * 1024
#: Deeper nesting is refused: PyYAML composes recursively, so 1 MiB of "[" would otherwise
#: exhaust the stack. A routing table nests about five deep.
MAX_DEPTH = 64
#: What PyYAML's reader counts as a line break.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class TableError(Exception):
    """A routing table that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_table(path: str | Path) -> Table:
    """Read and validate the table at ``path``."""
    return parse_table(read_table_bytes(path), str(path))


def read_table_bytes(path: str | Path) -> bytes:
    """The file's bytes (at most one more than the size limit, which :func:`read_yaml` then
    refuses), or a TableError."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        where = Location(str(path), 1, 1)
        raise TableError([Problem(where, f"cannot read: {exc.strerror}")]) from exc


def read_yaml_file(path: str | Path) -> Node | None:
    """:func:`read_yaml` of the file at ``path``, named by it in messages."""
    return read_yaml(read_table_bytes(path), str(path))


def read_yaml(data: bytes, source: str) -> Node | None:
    """The node tree of the YAML document ``data``, or None when it holds none (an empty file).

    The one reader of YAML in this project. It refuses more than :data:`MAX_TABLE_BYTES` and
    nesting deeper than :data:`MAX_DEPTH`; it composes with ``yaml.SafeLoader``, which keeps
    each value's position and constructs no Python object; and every error PyYAML raises (a
    character YAML does not allow, bytes that are neither UTF-8 nor UTF-16, a syntax error, a
    second document) becomes a :class:`TableError` whose one problem names ``source`` with the
    line and column of the fault. Read the tree with a :class:`~proxy.table.yamlnodes.NodeReader`.
    """
    if len(data) > MAX_TABLE_BYTES:
        raise TableError(
            [Problem(Location(source, 1, 1), f"file is larger than {MAX_TABLE_BYTES} bytes")]
        )
    try:
        return yaml.compose(data, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(source, mark.line + 1, mark.column + 1) if mark else Location(source, 1, 1)
        problem = exc.problem or exc.context or "malformed"
        if exc.context and problem.startswith("but "):
            # "expected a single document in the stream, but found another document"
            problem = f"{exc.context}, {problem}"
        raise TableError([Problem(where, f"invalid YAML: {problem}")]) from None
    except ReaderError as exc:
        raise TableError([_reader_problem(data, source, exc)]) from None
    except yaml.YAMLError as exc:
        raise TableError([Problem(Location(source, 1, 1), f"invalid YAML: {exc}")]) from None


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than :data:`MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self._depth >= MAX_DEPTH:
            self.check_event()  # makes current_event the node's first event
            mark = self.current_event.start_mark
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _reader_problem(data: bytes, source: str, exc: ReaderError) -> Problem:
    """A problem at the character (or byte) PyYAML's reader refused. Its error gives only an
    offset, into the decoded text or, for bytes that do not decode, into ``data``."""
    if data.startswith(codecs.BOM_UTF16_LE):
        encoding = "utf-16-le"
    elif data.startswith(codecs.BOM_UTF16_BE):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8"
    position = int(exc.position)
    if exc.encoding == "unicode":
        before = data.decode(encoding, "replace")[:position]
        message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        before = data[:position].decode(encoding, "replace")
        message = f"'{exc.encoding}' codec can't decode byte #x{exc.character:02x}: {exc.reason}"
    # Count lines and columns as PyYAML's reader does (a BOM takes no column).
    breaks = list(_BREAK.finditer(before))
    line = before[breaks[-1].end() :] if breaks else before
    where = Location(source, len(breaks) + 1, len(line) - line.count("\ufeff") + 1)
    return Problem(where, f"invalid YAML: {message}")


def digest(data: bytes) -> str:
    """A table's version: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def parse_table(data: bytes, source: str) -> Table:
    """Validate a table given as bytes; ``source`` names it in messages."""
    root = read_yaml(data, source)
    if root is None:
        raise TableError([Problem(Location(source, 1, 1), "the file is empty")])
    reader = NodeReader(source)
    table = _read_table(reader, root, source, digest(data))
    if reader.problems or table is None:
        problems = sorted(reader.problems, key=lambda p: (p.location.line, p.location.column))
        raise TableError(problems)
    return table


TABLE_VERSION = Field("version", fields.integer, minimum=0, maximum=1_000_000, required=True)
TABLE_BACKENDS = Field("backends", fields.node, required=True)
TABLE_ROUTES = Field("routes", fields.node, required=True)
TABLE_AUTHORIZERS = Field("authorizers", fields.node)
TABLE_FIELDS = (TABLE_VERSION, TABLE_BACKENDS, TABLE_AUTHORIZERS, TABLE_ROUTES)


def _read_table(reader: NodeReader, root: Node, source: str, digest: str) -> Table | None:
    top = fields.read(reader, "table", root, TABLE_FIELDS, prefix="")
    if top is None:
        return None
    version = top.get(TABLE_VERSION)
    version_node = top.node(TABLE_VERSION)
    if version is not None and version_node is not None and version != 1:
        reader.error(version_node, f"version: {version} is not supported (only 1 is)")
    backends_node, routes_node = top.get(TABLE_BACKENDS), top.get(TABLE_ROUTES)
    backends = {} if backends_node is None else read_backends(reader, backends_node)
    authorizers_node = top.get(TABLE_AUTHORIZERS)
    authorizers, declared = (
        ({}, ()) if authorizers_node is None else read_authorizers(reader, authorizers_node)
    )
    routes = () if routes_node is None else read_routes(reader, routes_node, backends, declared)
    return Table(
        1, MappingProxyType(backends), routes, source, digest, MappingProxyType(authorizers)
    )
