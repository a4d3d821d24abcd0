"""Trusted proxies: forwarding headers are believed only from them."""

from __future__ import annotations

import re

import pytest

from proxy.clientaddr import Forwarding, TrustedProxies, parse_networks

LB = TrustedProxies(parse_networks(["10.0.0.0/8", "192.168.1.1"]))


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    claims = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    assert LB.resolve("203.0.113.9", claims) == Forwarding("203.0.113.9", b"203.0.113.9")
    assert TrustedProxies().resolve("10.1.1.1", claims) == Forwarding("10.1.1.1", b"10.1.1.1")


def test_a_trusted_peer_reports_the_client_and_the_chain_grows() -> None:
    headers = [
        (b"x-forwarded-for", b"198.51.100.7, 10.2.2.2"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example.com"),
    ]
    assert LB.resolve("10.9.9.9", headers) == Forwarding(
        client_ip="198.51.100.7",
        forwarded_for=b"198.51.100.7, 10.2.2.2, 10.9.9.9",
        proto=b"https",
        host=b"shop.example.com",
        trusted=True,
    )


def test_the_client_is_the_rightmost_untrusted_address() -> None:
    # A client cannot pose as someone else by prepending to the header.
    spoofed = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7")]
    assert LB.resolve("192.168.1.1", spoofed).client_ip == "198.51.100.7"
    only_proxies = [(b"x-forwarded-for", b"10.0.0.5")]
    assert LB.resolve("10.0.0.6", only_proxies).client_ip == "10.0.0.5"


def test_bad_networks_are_named() -> None:
    message = "'10.0.0.0/33' is not an IP address or CIDR block"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_networks(["10.0.0.0/33"])
