"""The Host header's syntax and normal form (proxy/hosts.py): every spelling a backend would
normalise to a name reaches the same route as that name, and nothing else passes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.hosts import BadHost, Host, host_matches, parse_host, table_host


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"example.com", Host("example.com", None, b"example.com")),
        (b"Example.COM", Host("example.com", None, b"example.com")),
        (b"admin.test.", Host("admin.test", None, b"admin.test")),
        (b"ADMIN.test.:8080", Host("admin.test", 8080, b"admin.test:8080")),
        (b"example.com:08080", Host("example.com", 8080, b"example.com:8080")),
        (b"example.com:", Host("example.com", None, b"example.com")),
        (b"10.0.0.1", Host("10.0.0.1", None, b"10.0.0.1")),
        (b"[::1]", Host("[::1]", None, b"[::1]")),
        (b"[::1]:8080", Host("[::1]", 8080, b"[::1]:8080")),
        (b"xn--bcher-kva.example", Host("xn--bcher-kva.example", None, b"xn--bcher-kva.example")),
        (b"my_service.internal", Host("my_service.internal", None, b"my_service.internal")),
    ],
)
def test_valid_hosts_and_their_normal_form(raw: bytes, expected: Host) -> None:
    assert parse_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"admin.test:80:80",
        b"x, admin.test",
        b"ad min.test",
        b"admin.test/x",
        b"evil.test/.partner.test",
        b"evil.test#.partner.test",
        b"evil.test@.partner.test",
        b"user@admin.test",
        b"admin.test:http",
        b"admin.test:0",
        b"admin.test:65536",
        b"admin.test:-1",
        b"[::1",
        b"[zz::1]",
        b"[::1]x",
        b"caf\xc3\xa9.test",
        b"-admin.test",
        b"admin-.test",
        b"admin..test",
        b".admin.test",
        b"a" * 64 + b".test",
        b".",
    ],
)
def test_invalid_hosts_are_refused(raw: bytes) -> None:
    with pytest.raises(BadHost):
        parse_host(raw)


def test_wildcards_need_a_label_before_their_suffix() -> None:
    assert host_matches("*.partner.test", "a.partner.test")
    assert host_matches("*.partner.test", "a.b.partner.test")
    assert not host_matches("*.partner.test", "partner.test")
    assert not host_matches("*.partner.test", "evilpartner.test")
    assert host_matches("admin.test", "admin.test")
    assert not host_matches("admin.test", "admin.test.evil")


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Admin.Test", "admin.test"),
        ("admin.test.", "admin.test"),
        ("*.Partner.Test", "*.partner.test"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
    ],
)
def test_table_hosts_are_normalised_at_load(text: str, normal: str) -> None:
    assert table_host(text) == normal


@pytest.mark.parametrize("text", ["admin.test:80", "http://admin.test", "admin.test/x", "a b", ""])
def test_table_hosts_that_are_not_names(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        table_host(text)


# ---- properties -------------------------------------------------------------------------------

_LABELS = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
_NAMES = st.lists(_LABELS, min_size=1, max_size=4).map(".".join)


@given(st.binary(max_size=40))
def test_any_bytes_are_refused_or_have_a_stable_normal_form(raw: bytes) -> None:
    try:
        host = parse_host(raw)
    except BadHost:
        return
    assert parse_host(host.value) == host
    if not host.name.startswith("["):
        assert set(host.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        assert not host.name.endswith(".")


@given(
    _NAMES,
    st.booleans(),
    st.none() | st.integers(1, 65535),
    st.booleans(),
)
def test_every_spelling_of_a_name_matches_as_the_name(
    name: str, trailing_dot: bool, port: int | None, upper: bool
) -> None:
    spelled = (name.upper() if upper else name) + ("." if trailing_dot else "")
    if port is not None:
        spelled += f":{port}"
    host = parse_host(spelled.encode())
    assert host.name == table_host(name)
    assert host_matches(table_host(name), host.name)
    assert host_matches(table_host("*." + name), parse_host(b"www." + spelled.encode()).name)


@given(_NAMES, st.sampled_from("/#@?, \\\t%!"), _NAMES)
def test_no_separator_smuggles_a_host_into_a_wildcard(
    evil: str, separator: str, suffix: str
) -> None:
    with pytest.raises(BadHost):
        parse_host(f"{evil}{separator}.{suffix}".encode())
