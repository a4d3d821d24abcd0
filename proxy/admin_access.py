"""Who may talk to the admin port: the Host it is asked by, and what a browser may send it.

The admin port answers on loopback by default, and a web page can still reach it: a page on
``rebind.evil.example`` whose name the attacker re-points at 127.0.0.1 is same-origin with the
admin port for the browser (DNS rebinding), and a plain HTML form can POST anywhere. So:

- the Host header must name the admin port: ``localhost``, an IP address (a page can never be
  served from an address literal it does not own), the configured ``--admin-host`` when it is
  a name, or a name in ``--admin-allowed-hosts`` (a Compose service name, a Kubernetes
  Service's DNS name); anything else is ``403``;
- ``POST`` must be a request no page can send without the browser asking the port first (a
  CORS preflight, which the admin port never grants): ``Content-Type: application/json``;
  and a browser's ``Origin`` or ``Sec-Fetch-Site`` must not name another site.

See docs/security.md, "The admin port".
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from proxy.asgi import ASGIApp, Receive, Scope, Send
from proxy.hosts import BadHost, parse_host

LOOPBACK_NAMES = frozenset({"localhost"})


class AdminAccess:
    def __init__(self, admin_host: str, allowed: Iterable[str] = ()) -> None:
        names = set(LOOPBACK_NAMES)
        for name in (admin_host, *allowed):
            name = name.strip().lower().removesuffix(".")
            if name and not _is_address(name):
                names.add(name)
        self.names = frozenset(names)

    def host_allowed(self, value: bytes | None) -> bool:
        if value is None:
            return False
        try:
            name = parse_host(value).name
        except BadHost:
            return False
        return name in self.names or _is_address(name)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return name in ("0.0.0.0", "::")
    return True


def cross_site(headers: dict[str, str]) -> bool:
    """Whether a browser sent this request on behalf of another site: its Sec-Fetch-Site says
    so, or its Origin is not the admin port's own."""
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != headers.get("host", "")


def json_request(headers: dict[str, str]) -> bool:
    """A JSON body's content type: no HTML form can send it without a CORS preflight."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json"


def guarded(app: ASGIApp, access: AdminAccess) -> ASGIApp:
    """``app`` answering only requests whose Host names the admin port."""

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for n, v in scope["headers"] if n == b"host"), None)
            if not access.host_allowed(host):
                shown = host.decode("latin-1") if host is not None else "(none)"
                await _forbidden(send, f"the admin port does not answer to Host {shown!r}")
                return
        await app(scope, receive, send)

    return guard


async def _forbidden(send: Send, message: str) -> None:
    body = json.dumps({"error": "forbidden", "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
