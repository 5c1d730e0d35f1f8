"""The bucket allocation: exact quotas, sticky ramps, history-free, documented multi-variant moves."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.allocate import BUCKETS, allocate, preference, shadow_buckets


def owned(owner: list[int], i: int) -> set[int]:
    return {b for b, o in enumerate(owner) if o == i}


def test_preference_is_a_permutation_and_salted() -> None:
    p = preference("s", 0, "variant\x1fb")
    assert sorted(p) == list(range(BUCKETS))
    assert p != preference("s2", 0, "variant\x1fb")
    assert p != preference("s", 1, "variant\x1fb")  # bucket_version re-randomises


def test_two_variant_ramp_moves_exactly_the_difference() -> None:
    for lo, hi in [(1000, 2000), (0, 5000), (4999, 5001), (9000, 10_000)]:
        before = allocate("salt", 0, [("a", BUCKETS - lo), ("b", lo)], "a")
        after = allocate("salt", 0, [("a", BUCKETS - hi), ("b", hi)], "a")
        moved = [b for b in range(BUCKETS) if before[b] != after[b]]
        assert len(moved) == hi - lo
        assert all(before[b] == 0 and after[b] == 1 for b in moved)
        assert allocate("salt", 0, [("a", BUCKETS - lo), ("b", lo)], "a") == before


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    idx=st.integers(0, 3),
    delta=st.integers(-2000, 2000),
)
def test_multi_variant_ramp_against_control(counts: list[int], idx: int, delta: int) -> None:
    """Ramping treatment v against control: earlier treatments never move; v only grows or
    only shrinks; a bucket only moves toward an earlier-listed owner (or to/from v)."""
    treat = [(f"t{i}", n) for i, n in enumerate(counts)]
    idx %= len(treat)
    new_n = min(max(0, treat[idx][1] + delta), BUCKETS - sum(n for _, n in treat) + treat[idx][1])
    q1 = [("c", BUCKETS - sum(n for _, n in treat)), *treat]
    treat2 = list(treat)
    treat2[idx] = (treat[idx][0], new_n)
    q2 = [("c", BUCKETS - sum(n for _, n in treat2)), *treat2]
    o1, o2 = allocate("s", 0, q1, "c"), allocate("s", 0, q2, "c")
    for i, (_, n) in enumerate(q2):
        assert len(owned(o2, i)) == n  # exact quotas
    v = idx + 1
    for earlier in range(1, v):
        assert owned(o1, earlier) == owned(o2, earlier)
    s1, s2 = owned(o1, v), owned(o2, v)
    assert s1 <= s2 or s2 <= s1
    small, big = (o1, o2) if new_n >= treat[idx][1] else (o2, o1)  # v smaller -> v bigger
    moved = 0
    for b in range(BUCKETS):
        if small[b] != big[b]:
            moved += 1
            if v not in (small[b], big[b]):
                # knock-on move: a later treatment refills from control or a still-later one
                assert big[b] > v and (small[b] == 0 or small[b] > big[b])
    later = len(treat) - 1 - idx
    assert moved <= abs(new_n - treat[idx][1]) * (1 + later)
    assert allocate("s", 0, q1, "c") == o1  # history-free: reverting restores it exactly


def test_appending_a_treatment_only_takes_from_control() -> None:
    o1 = allocate("s", 0, [("a", 6000), ("b", 2000), ("c", 2000)], "a")
    o2 = allocate("s", 0, [("a", 5000), ("b", 2000), ("c", 2000), ("d", 1000)], "a")
    moved = [b for b in range(BUCKETS) if o1[b] != o2[b]]
    assert len(moved) == 1000 and all(o1[b] == 0 and o2[b] == 3 for b in moved)


def test_shadow_buckets_exact_and_nested() -> None:
    m5 = shadow_buckets("s", 0, "c", 500)
    m10 = shadow_buckets("s", 0, "c", 1000)
    assert sum(m5) == 500 and sum(m10) == 1000
    assert all(m10[b] for b in range(BUCKETS) if m5[b])


@settings(max_examples=25, deadline=None)
@given(salt=st.text(min_size=1, max_size=12), lo=st.integers(0, 10_000), hi=st.integers(0, 10_000))
def test_two_variant_stickiness_for_any_salt(salt: str, lo: int, hi: int) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    small = allocate(salt, 0, [("a", BUCKETS - lo), ("b", lo)], "a")
    big = allocate(salt, 0, [("a", BUCKETS - hi), ("b", hi)], "a")
    moved = [b for b in range(BUCKETS) if small[b] != big[b]]
    assert len(moved) == hi - lo and all(small[b] == 0 and big[b] == 1 for b in moved)
