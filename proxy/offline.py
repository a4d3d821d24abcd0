"""Working with a routing table without serving it: ``strangler check`` and ``strangler explain``.

Both load and compile the table exactly as ``serve`` does, so a table that passes here loads
there; no connection is ever opened.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.backends import backend_factory
from proxy.backends.adapters import ClientTransport, new_client
from proxy.backends.transport import Transport
from proxy.errors import BadRequest
from proxy.routes import CompiledRoute, CompiledTable, compile_table
from proxy.table.loader import load_table
from proxy.table.model import WEIGHT_SCALE


def load_compiled(path: str) -> CompiledTable:
    """The compiled table at ``path`` (raises TableError); its backends hold no connections."""
    transport = Transport()
    return compile_table(
        load_table(path), backend_factory(new_client(ClientTransport(transport)), transport)
    )


def summarise(table: CompiledTable) -> str:
    """A one-line summary of a valid table."""
    routes, backends = len(table.router.routes), len(table.backends)
    return (
        f"{routes} route{'s' * (routes != 1)}, {backends} backend{'s' * (backends != 1)}, "
        f"version {table.version}"
    )


def parse_header(text: str) -> tuple[bytes, bytes]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"header {text!r} is not 'Name: value'")
    return name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")


def explain_request(
    config: str, method: str, url: str, header_args: Sequence[str]
) -> tuple[str, bool]:
    """A human explanation of how the table at ``config`` routes a request, and whether a
    route matched."""
    table = load_compiled(config)
    headers = [parse_header(text) for text in header_args]
    target = url
    if "://" in url:
        rest = url.split("://", 1)[1]
        authority, slash, tail = rest.partition("/")
        target = slash + tail if slash else "/"
        if authority and not any(name == b"host" for name, _ in headers):
            headers.append((b"host", authority.encode("latin-1")))
    raw_path, _, _query = target.partition("?")
    host_value = next((value for name, value in headers if name == b"host"), None)
    lines = [f"request   {method} {target}"]
    try:
        # The gateway's own resolution: the same normalisation, the same refusals.
        path, host = table.normalise(raw_path.encode("utf-8"), host_value)
    except BadRequest as exc:
        lines.append(f"refused   400 bad_request: {exc.message}")
        return "\n".join(lines), False
    if host is not None:
        lines[0] += f"   (host {host.name})"
    if path != raw_path:
        lines.append(f"path      {path}   (normalised; this is what the backend receives)")
    decisions = table.explain(method, path, host, headers)
    winner = next((d for d in decisions if d.reason is None), None)
    if winner is None:
        lines.append("route     none: the gateway answers 404 no_route")
    else:
        route = winner.route
        lines.append(f"route     {route.name}   ({route.spec.location})")
        lines.append(f"match     {_conditions(route)}")
        if winner.captures:
            captured = ", ".join(f"{k}={v}" for k, v in winner.captures.items())
            lines.append(f"captures  {captured}")
        if route.rewrite is not None:
            rewritten, replaced = route.rewrite.apply(path, winner.captures or {})
            told = f"; X-Forwarded-Prefix: {replaced}" if replaced else ""
            lines.append(f"rewrite   {rewritten}   (what url backends receive{told})")
        authorizer = route.authorizer
        if authorizer is not None:
            identity = ", ".join(str(source) for source in authorizer.spec.identity)
            mode = "; optional" if route.optional else ""
            lines.append(f"auth      {authorizer.name}   (authorizer; identity {identity}{mode})")
        for backend, weight in route.backends:
            share = f"{weight * 100 / WEIGHT_SCALE:g}%"
            lines.append(f"backend   {backend.name} ({backend.kind.value}) {share}")
        lines.extend(_sticky_lines(route, headers))
    lines.append("")
    lines.append("routes in the order they are tried:")
    width = max(len(d.route.name) for d in decisions)
    pattern_width = max(len(d.route.pattern.text) for d in decisions)
    for position, decision in enumerate(decisions, 1):
        verdict = "chosen" if decision is winner else f"no: {decision.reason}"
        lines.append(
            f"  {position:>2}. {decision.route.name:<{width}}  "
            f"{decision.route.pattern.text:<{pattern_width}}  {verdict}"
        )
    return "\n".join(lines), winner is not None


def _conditions(route: CompiledRoute) -> str:
    parts = [f"path {route.pattern.text}" + (" (prefix)" if route.pattern.is_prefix else "")]
    if route.methods is not None:
        parts.append("methods " + ",".join(sorted(route.methods)))
    if route.host is not None:
        parts.append(f"host {route.host}")
    parts.extend(f"header {n.decode()}: {v.decode()}" for n, v in route.headers)
    return "; ".join(parts)


def _sticky_lines(route: CompiledRoute, headers: list[tuple[bytes, bytes]]) -> list[str]:
    sticky = route.sticky
    if sticky is None:
        return []
    source, key = sticky.source, sticky.key(headers)
    if key is not None:
        landing = route.split.pick_for_key(key)
        return [f"sticky    on {source}: key {key!r} lands on {landing.name}"]
    if sticky.set_cookie:
        return [f"sticky    on {source}: no key; a new one is made and set as a cookie"]
    return [f"sticky    on {source}: no key; the backend is picked at random by weight"]
