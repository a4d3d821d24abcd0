"""Route tests (docs/reference.md, "Route tests"): a YAML list of requests and the route,
backend and path each must get, checked against a compiled table without serving it
(``strangler check --tests``).

```yaml
- request: { method: GET, path: /auth/login }
  expect: { route: auth, backend: auth }
- request: { method: GET, path: /products, headers: { Cookie: "session_id=u-42" } }
  expect: { route: catalog, backend: catalog }
- request: { method: GET, path: "/api/v1/orders/42?x=1" }
  expect: { route: orders-v1, path: /orders/42 }
- request: { method: GET, path: /cart }
  expect: { route: cart, authorizer: legacy-session }
```

``path`` is what a url backend gets as the path after the route's ``rewrite`` (before the
backend's own base path, without the query); ``authorizer`` the name of the route's
authorizer, or ``none``.

``route: none`` expects no route to match (or the path to be refused). A backend can only be
expected where it is certain: a route with one live backend, or a sticky split given its key.
"""

from __future__ import annotations

from yaml.nodes import Node

from proxy.errors import BadRequest, NoRoute
from proxy.headers import header_value
from proxy.routes import CompiledTable
from proxy.table.loader import TableError, read_yaml_file
from proxy.table.yamlnodes import NodeReader, Problem

_CASE_KEYS = frozenset({"request", "expect"})
_REQUEST_KEYS = frozenset({"method", "path", "host", "headers"})
_EXPECT_KEYS = frozenset({"route", "backend", "path", "authorizer"})


def run_route_tests(table: CompiledTable, path: str) -> tuple[int, list[Problem]]:
    """The number of cases and a problem for each failing one; a TableError when the test
    file itself is malformed."""
    # The table's own reader: the same size limit, every YAML error as FILE:LINE:COL.
    root = read_yaml_file(path)
    reader = NodeReader(path)
    cases = reader.sequence(root, "tests") if root is not None else []
    failures: list[Problem] = []
    for number, node in enumerate(cases or [], 1):
        failure = _run_case(reader, table, number, node)
        if failure is not None:
            failures.append(Problem(reader.location(node), failure))
    if reader.problems:
        raise TableError(
            sorted(reader.problems, key=lambda p: (p.location.line, p.location.column))
        )
    return len(cases or []), failures


def _run_case(reader: NodeReader, table: CompiledTable, number: int, node: Node) -> str | None:
    where = f"tests[{number - 1}]"
    case = reader.mapping(node, where, _CASE_KEYS)
    if case is None or "request" not in case or "expect" not in case:
        if case is not None:
            reader.error(node, f"{where}: needs both 'request' and 'expect'")
        return None
    request = reader.mapping(case["request"][1], f"{where}.request", _REQUEST_KEYS)
    expect = reader.mapping(case["expect"][1], f"{where}.expect", _EXPECT_KEYS)
    if request is None or expect is None:
        return None
    fields = {
        k: reader.string(v, f"{where}.request.{k}")
        for k, (_, v) in request.items()
        if k != "headers"
    }
    wanted = {k: reader.string(v, f"{where}.expect.{k}") for k, (_, v) in expect.items()}
    headers: list[tuple[bytes, bytes]] = []
    if "headers" in request:
        entries = reader.mapping(request["headers"][1], f"{where}.request.headers") or {}
        for name, (_, value_node) in entries.items():
            value = reader.string(value_node, f"{where}.request.headers.{name}")
            if value is not None:
                headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    method, raw_path = fields.get("method") or "GET", fields.get("path")
    if raw_path is None:
        reader.error(node, f"{where}.request: missing required key 'path'")
        return None
    if fields.get("host"):
        headers.append((b"host", str(fields["host"]).encode("latin-1")))
    label = f"case {number} ({method} {raw_path})"
    got_route, got_backend, got_path, got_authorizer, why = _decide(
        table, method, raw_path, headers
    )
    if "route" in wanted and wanted["route"] != got_route:
        return f"{label}: expected route {wanted['route']}, got {got_route}{why}"
    if "backend" in wanted and wanted["backend"] != got_backend:
        return f"{label}: expected backend {wanted['backend']}, got {got_backend}{why}"
    if "path" in wanted and wanted["path"] != got_path:
        return f"{label}: expected path {wanted['path']}, got {got_path}{why}"
    if "authorizer" in wanted and wanted["authorizer"] != got_authorizer:
        return f"{label}: expected authorizer {wanted['authorizer']}, got {got_authorizer}"
    return None


def _decide(
    table: CompiledTable, method: str, raw_path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[str, str, str, str, str]:
    """The route, backend, path (rewritten, before a url backend's base path, without the
    query) and authorizer the gateway would give the request (its own resolution), and why,
    when that is not plain: a refused request has ``none`` for all four."""
    host = header_value(headers, b"host")
    try:
        resolved = table.resolve(
            method,
            raw_path.split("?", 1)[0].encode("utf-8"),
            host.encode("latin-1") if host is not None else None,
            headers,
        )
    except NoRoute:
        return "none", "none", "none", "none", ""
    except BadRequest as exc:
        return "none", "none", "none", "none", f" (400: {exc.message})"
    route = resolved.route
    path = resolved.path
    if route.rewrite is not None:
        path = route.rewrite.apply(path, resolved.captures)[0]
    authorizer = route.authorizer.name if route.authorizer is not None else "none"
    backend = route.chosen_for(headers)
    if backend is not None:
        return route.name, backend.name, path, authorizer, ""
    live = ", ".join(b.name for b, weight in route.backends if weight > 0)
    why = " (send the sticky key to pin it)"
    return route.name, f"one of {live} at random", path, authorizer, why
