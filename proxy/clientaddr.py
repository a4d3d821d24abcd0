"""Who the client is: the peer's address, or, behind proxies the operator trusts, the address
those proxies report.

``X-Forwarded-For``, ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``Forwarded`` are claims
anyone can send; they are believed only from a peer in ``--trusted-proxies``. The client
address found here is used everywhere: the ``X-Forwarded-For`` sent on, a function's
``sourceIp``, the logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.asgi import RawHeaders

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Forwarding:
    client_ip: str
    #: The X-Forwarded-For to send on: the trusted chain, ending with the peer.
    forwarded_for: bytes
    #: X-Forwarded-Proto / -Host as a trusted proxy reported them, else None.
    proto: bytes | None = None
    host: bytes | None = None
    #: Whether the peer is trusted (its Forwarded header is then passed on).
    trusted: bool = False


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDR blocks or single addresses; ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR block") from None
    return tuple(networks)


class TrustedProxies:
    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self._networks = tuple(networks)

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def resolve(self, peer: str, headers: RawHeaders) -> Forwarding:
        if not self.trusts(peer):
            return Forwarding(peer, peer.encode("latin-1"))
        chain: list[str] = []
        proto = host = None
        for name, value in headers:
            if name == b"x-forwarded-for":
                chain.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-host":
                host = value
        chain.append(peer)
        # The client is the rightmost address that is not one of our proxies.
        client = next((a for a in reversed(chain) if not self.trusts(a)), chain[0])
        return Forwarding(client, ", ".join(chain).encode("latin-1"), proto, host, trusted=True)
