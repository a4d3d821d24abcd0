"""The authorizers' decision cache (proxy/authcache.py): TTL, least-recently-used eviction,
and its bounds in entries and bytes, whatever is put in it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.authcache import ENTRY_OVERHEAD, DecisionCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(*values: str) -> tuple[tuple[str, ...], ...]:
    return tuple((value,) for value in values)


def test_an_entry_lives_for_its_ttl_and_not_a_moment_longer() -> None:
    clock = Clock()
    cache: DecisionCache[str] = DecisionCache(clock=clock)
    cache.put(key("a"), "allow", 10, ttl=30)
    clock.now += 29.999
    assert cache.get(key("a")) == "allow"
    clock.now += 0.001
    assert cache.get(key("a")) is None
    assert (len(cache), cache.bytes) == (0, 0)


def test_nothing_is_kept_without_a_ttl() -> None:
    cache: DecisionCache[str] = DecisionCache()
    cache.put(key("a"), "allow", 10, ttl=0)
    assert cache.get(key("a")) is None


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: DecisionCache[str] = DecisionCache(max_entries=2)
    cache.put(key("a"), "A", 1, ttl=60)
    cache.put(key("b"), "B", 1, ttl=60)
    assert cache.get(key("a")) == "A"  # now b is the least recently used
    cache.put(key("c"), "C", 1, ttl=60)
    assert [cache.get(key(k)) for k in "abc"] == ["A", None, "C"]


def test_sizes_count_the_key_and_an_overhead_and_a_value_too_large_is_not_kept() -> None:
    cache: DecisionCache[str] = DecisionCache(max_bytes=ENTRY_OVERHEAD + 100)
    cache.put(key("abcd"), "v", 96, ttl=60)
    assert cache.bytes == ENTRY_OVERHEAD + 100
    cache.put(key("abcde"), "w", 96, ttl=60)  # one byte too many: not kept, nothing evicted
    assert (cache.get(key("abcd")), cache.get(key("abcde"))) == ("v", None)


def test_putting_a_key_again_replaces_it_and_its_size() -> None:
    cache: DecisionCache[str] = DecisionCache()
    cache.put(key("a"), "old", 500, ttl=60)
    cache.put(key("a"), "new", 10, ttl=60)
    assert (cache.get(key("a")), len(cache), cache.bytes) == ("new", 1, ENTRY_OVERHEAD + 11)


@given(
    st.lists(
        st.tuples(st.text(max_size=40), st.integers(min_value=0, max_value=5000)), max_size=300
    ),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=ENTRY_OVERHEAD, max_value=40_000),
)
def test_the_bounds_hold_whatever_is_put(
    puts: list[tuple[str, int]], max_entries: int, max_bytes: int
) -> None:
    cache: DecisionCache[int] = DecisionCache(max_entries=max_entries, max_bytes=max_bytes)
    for value, size in puts:
        cache.put(key(value), size, size, ttl=60)
        assert len(cache) <= max_entries
        assert cache.bytes <= max_bytes
        # Each entry costs what was said of it, its key and the overhead; the total is theirs.
        entries = cache._entries.items()
        assert all(v[1] == ENTRY_OVERHEAD + len(k[0][0]) + v[0] for k, v in entries)
        assert cache.bytes == sum(v[1] for _, v in entries)
