"""The inventory of legacy traffic (proxy/inventory.py): what folds and what stays, as
examples from real APIs and as properties; the cap under a million random paths, in templates
and in memory; samples and their redaction; merging workers and replicas."""

from __future__ import annotations

import json
import random
import string
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.inventory import (
    MAX_TEMPLATES,
    REDACTED,
    SAMPLES_PER_TEMPLATE,
    Inventory,
    fold,
    is_identifier,
    merge,
    numbered,
)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/", "/"),
        ("/products/7", "/products/{id}"),
        ("/products/7/reviews", "/products/{id}/reviews"),
        ("/orders/1001/items/3", "/orders/{id}/items/{id}"),
        ("/users/3f2b8a9e-1c4d-4e5f-9a8b-7c6d5e4f3a2b", "/users/{id}"),
        ("/users/3F2B8A9E1C4D4E5F9A8B7C6D5E4F3A2B/avatar", "/users/{id}/avatar"),
        ("/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/commits/{id}"),
        ("/files/5f3c2a1b9e8d7c6b", "/files/{id}"),  # hex of 16 digits
        ("/files/5f3c2a1b9e8d7c6", "/files/5f3c2a1b9e8d7c6"),  # 15: a word
        ("/reset/eyJhbGciOiJIUzI1NiJ9abc123", "/reset/{id}"),  # base64url-like
        ("/share/aGVsbG8gd29ybGQgMTIzNDU2Nzg5MA==", "/share/{id}"),
        ("/customers/cus_4f9Xk2LmQ8", "/customers/{id}"),  # a prefixed id
        ("/reports/2026-11-30", "/reports/{id}"),
        ("/prices/19.99", "/prices/{id}"),
        ("/api/v2/products", "/api/v2/products"),  # words stay, versions too
        ("/products/featured", "/products/featured"),
        ("/locale/en-US/help", "/locale/en-US/help"),
        ("/auth/2fa", "/auth/2fa"),
        ("/items/caf%C3%A9", "/items/caf%C3%A9"),
        ("/docs/getting-started-with-the-shop-api", "/docs/getting-started-with-the-shop-api"),
        ("/a/ABCDEFGHIJKLMNOPQRSTUVWXYZ", "/a/ABCDEFGHIJKLMNOPQRSTUVWXYZ"),  # letters only
    ],
)
def test_identifiers_fold_and_words_stay(path: str, template: str) -> None:
    assert fold(path) == template


segment = st.one_of(
    st.integers(0, 10**12).map(str),
    st.uuids().map(str),
    st.text(string.ascii_lowercase, min_size=1, max_size=12),
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=40),
)
paths = st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts))


@given(paths)
def test_folding_keeps_the_shape_and_is_idempotent(path: str) -> None:
    template = fold(path)
    assert template.count("/") == path.count("/")
    assert fold(template) == template
    for original, folded in zip(path.split("/"), template.split("/"), strict=True):
        assert folded in (original, "{id}")
        assert (folded == "{id}") == is_identifier(original)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=5))
def test_every_number_folds(numbers: list[int]) -> None:
    path = "/" + "/".join(f"things/{n}" for n in numbers)
    assert fold(path) == "/" + "/".join("things/{id}" for _ in numbers)


@given(st.lists(st.text(string.ascii_lowercase + "-", min_size=1, max_size=30), max_size=5))
def test_words_never_fold(words: list[str]) -> None:
    path = "/" + "/".join(words)
    assert fold(path) == path


def test_repeated_parameters_are_numbered_for_a_route() -> None:
    assert numbered("/users/{id}/orders/{id}/items/{id}") == "/users/{id}/orders/{id2}/items/{id3}"
    assert numbered("/products") == "/products"


def test_a_million_random_paths_stay_under_the_cap_in_templates_and_memory() -> None:
    inventory = Inventory()
    rng = random.Random(7)
    letters = string.ascii_lowercase

    def attack(count: int, start: int) -> None:
        for number in range(start, start + count):
            word = "".join(rng.choices(letters, k=10))
            template = inventory.template(f"/{word}/{number}")
            inventory.count("monolith", "everything-else", "GET", template, 200)

    attack(1_000_000, 0)
    assert len(inventory.backends["monolith"]) == MAX_TEMPLATES
    assert inventory.other["monolith"].requests == 1_000_000 - MAX_TEMPLATES
    # Full, it grows no more: another 100,000 random paths leave the memory where it was (once
    # the cache of recent folds, itself bounded, holds traced entries only).
    tracemalloc.start()
    attack(20_000, 1_000_000)
    before = tracemalloc.get_traced_memory()[0]
    attack(100_000, 1_020_000)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 64 * 1024, after - before
    assert peak - before < 1024 * 1024, peak - before
    assert len(inventory.backends["monolith"]) == MAX_TEMPLATES


def test_counts_errors_and_times() -> None:
    inventory = Inventory()
    for status in (200, 503, 404, 502):
        inventory.count("monolith", "cart", "GET", "/cart", status)
    entry = inventory.backends["monolith"][("GET", "/cart")]
    assert (entry.requests, entry.errors) == (4, 2)
    assert 0 < entry.first_seen <= entry.last_seen
    inventory.count("monolith", "cart-v2", "GET", "/cart", 200)
    assert entry.route == "cart-v2"  # the route that sent it last


def test_the_cache_of_folds_keeps_no_path_too_long_to_be_a_template() -> None:
    inventory = Inventory()
    for number in range(5000):
        inventory.template(f"/{'x' * 7000}/{number}")
    assert len(inventory._folds) == 0
    for number in range(5000):
        inventory.template(f"/orders/{number}")
    assert len(inventory._folds) == 4096


def test_samples_are_redacted_and_limited() -> None:
    inventory = Inventory(frozenset({b"x-api-key"}))
    inventory.count("monolith", "auth", "POST", "/auth/login", 200)
    request_headers = [
        (b"cookie", b"session_id=s3cret"),
        (b"authorization", b"Bearer s3cret"),
        (b"x-api-key", b"s3cret"),
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
    ]
    body = b'{"username": "alice", "password": "s3cret", "profile": {"api_key": "s3cret", "n": 1}}'
    answer = [(b"set-cookie", b"session_id=s3cret"), (b"content-type", b"application/json")]
    for _ in range(SAMPLES_PER_TEMPLATE + 2):
        assert inventory.wants_sample("monolith", "POST", "/auth/login") is (
            len(inventory.backends["monolith"][("POST", "/auth/login")].samples)
            < SAMPLES_PER_TEMPLATE
        )
        inventory.add_sample(
            "monolith", "POST", "/auth/login",
            ("/auth/login", b"next=%2F", request_headers, body),
            (200, answer, b'{"token": "s3cret", "user": {"id": 1}}'),
        )  # fmt: skip
    samples = inventory.backends["monolith"][("POST", "/auth/login")].samples
    assert len(samples) == SAMPLES_PER_TEMPLATE
    sample = json.loads(samples[0])
    assert sample["request"]["headers"] == [
        ["cookie", REDACTED], ["authorization", REDACTED], ["x-api-key", REDACTED],
        ["content-type", "application/json"], ["accept", "*/*"],
    ]  # fmt: skip
    assert sample["request"]["body"] == {
        "json": {
            "username": "alice",
            "password": REDACTED,
            "profile": {"api_key": REDACTED, "n": 1},
        }
    }
    assert sample["response"]["headers"][0] == ["set-cookie", REDACTED]
    assert sample["response"]["body"] == {"json": {"token": REDACTED, "user": {"id": 1}}}
    assert "s3cret" not in str(samples)
    assert inventory.sample_bytes == sum(len(sample) for sample in samples)


def test_secret_query_parameters_form_fields_and_token_headers_are_redacted() -> None:
    inventory = Inventory()
    inventory.count("monolith", "login", "POST", "/login", 302)
    inventory.add_sample(
        "monolith", "POST", "/login",
        (
            "/login",
            b"next=%2Fcart&access_token=s3cret",
            [(b"content-type", b"application/x-www-form-urlencoded"), (b"x-auth-token", b"s3cret")],
            b"username=alice&password=s3cret",
        ),
        (302, [(b"location", b"/cart")], b""),
    )  # fmt: skip
    (text,) = inventory.backends["monolith"][("POST", "/login")].samples
    sample = json.loads(text)
    assert sample["request"]["query"] == f"next=%2Fcart&access_token={REDACTED}"
    assert sample["request"]["body"] == {"text": f"username=alice&password={REDACTED}"}
    assert sample["request"]["headers"][1] == ["x-auth-token", REDACTED]


def test_workers_and_replicas_merge_into_one_report() -> None:
    first, second = Inventory(), Inventory()
    for _ in range(3):
        first.count("monolith", "cart", "GET", "/cart", 200)
    second.count("monolith", "cart", "GET", "/cart", 500)
    second.count("monolith", "orders", "GET", "/orders/{id}", 200)
    second.count("catalog", "catalog", "GET", "/products", 200)  # a new backend: left out
    report = merge([first.snapshot(), second.snapshot()], {"monolith": "legacy", "catalog": "new"})
    (monolith,) = report["backends"]
    assert [(t["template"], t["requests"], t["errors"]) for t in monolith["templates"]] == [
        ("/cart", 4, 1),
        ("/orders/{id}", 1, 0),
    ]
    assert monolith["other"] == {"requests": 0, "errors": 0}
    assert "samples" not in monolith["templates"][0]


def test_a_body_over_the_sample_limit_is_kept_as_null() -> None:
    inventory = Inventory()
    inventory.count("monolith", "r", "POST", "/upload", 200)
    big = b"x" * (64 * 1024 + 1)
    inventory.add_sample(
        "monolith", "POST", "/upload", ("/upload", b"", [], big), (200, [], b"y" * 64 * 1024)
    )
    (text,) = inventory.backends["monolith"][("POST", "/upload")].samples
    sample = json.loads(text)
    assert sample["request"]["body"] is None
    assert sample["response"]["body"] == {"text": "y" * 64 * 1024}
