"""Deterministic bucketing: unit id -> bucket, and bucket -> variant ("the allocation").

Everything here is a pure function of (salt, bucket_version, variant names, bucket counts);
no I/O, no history, no randomness beyond MurmurHash3 (mmh3, x86 32-bit), so every process,
restart and the offline tool agree bit for bit.

**Unit -> bucket.** ``bucket = mmh3(unit_id, seed) mod 10_000`` with
``seed = mmh3("unit\\x1f{salt}\\x1f{bucket_version}")``. A new salt or bucket_version
re-randomises every unit; nothing else moves a unit to another bucket.

**Bucket -> variant (sticky ramps).** Every variant ``v`` has its own fixed preference order
of the 10,000 buckets, a permutation seeded by (salt, bucket_version, v's name). The
*control* variant is special: it owns whatever is left. The other variants ("treatments"),
in the order they are listed, each claim their quota (``weight`` x 100 buckets) by walking
their own preference order and taking the first buckets no earlier treatment has taken.

Guarantees (N = 10,000; n_v = v's bucket count):

1. Exact quotas: v owns exactly n_v buckets, so a variant's share of units is
   Binomial(units, n_v/N), no extra allocation noise.
2. History-free: the allocation depends only on the current config. Reverting a change
   (weights, order, status) restores exactly the previous allocation, so "ramp back" returns
   the very same units, for any number of variants.
3. Two variants (control A, treatment B): B owns the first n_B buckets of its preference
   order, so raising n_B -> n_B' adds exactly n_B' - n_B buckets, all taken from A; lowering
   gives back exactly those. Only A<->B moves, and no more than the weight change requires.
4. More variants, when treatment v's weight changes against control:
   * treatments listed before v keep every bucket (their claims never look at v);
   * v's set only grows (or only shrinks): it is a prefix of v's own order;
   * a later treatment w keeps every bucket v does not take, loses the ones v takes and
     refills from what is free in its own order (from control, or from a treatment listed
     after w, which refills in turn). Every knock-on move goes to a later treatment from
     control or from a treatment listed after it; each later treatment loses and refills at
     most |change| buckets, so at most |change| x (1 + number of later treatments) buckets
     move, typically much fewer (w loses about its share of what v takes). Moves are exactly
     minimal when the ramped treatment is listed last. Recommendation: list control first,
     append new treatments at the end, ramp the last-listed treatment.
   * Moving weight between two treatments (not control) is not minimal in general.

Why not perfectly minimal for 3+ variants? With exact quotas and no history it is impossible:
minimal moves for every pairwise transfer force each variant's set to depend on its own count
only (S_v = g_v(n_v)); with three variants take n = (N-2, 1, 1) -> g_B(1) and g_C(1) must be
disjoint, but (N-1, 0, 1) forces g_A(N-1) = all \\ g_C(1) and (N-1, 1, 0) forces
g_B(1) = all \\ g_A(N-1) = g_C(1), a contradiction. A history-dependent allocation (store
the previous bucket map, move the minimal set) could do it, at the price of the offline tool
and every replica needing that stored history rather than just the config; we chose
history-free.

**Shadow.** The shadow decision is per unit (deterministic): a unit is mirrored when its
bucket is among the first ``share`` x 100 buckets of the shadow's own preference order. This
is independent of the primary allocation, so each primary variant is shadowed in proportion.
"""

from __future__ import annotations

from typing import Sequence

import mmh3

from .config import BUCKETS

__all__ = ["BUCKETS", "unit_seed", "bucket_of", "preference", "allocate", "shadow_buckets"]

_SEP = "\x1f"
_BUCKET_KEYS = tuple(b.to_bytes(2, "big") for b in range(BUCKETS))  # immutable, built once


def unit_seed(salt: str, bucket_version: int) -> int:
    """The mmh3 seed that maps unit ids to buckets for this salt."""
    return mmh3.hash(f"unit{_SEP}{salt}{_SEP}{bucket_version}", 0, False)


def bucket_of(unit_id: str, seed: int) -> int:
    """Bucket in [0, 10_000) of one unit id (UTF-8 hashed)."""
    return mmh3.hash(unit_id, seed, False) % BUCKETS


def preference(salt: str, bucket_version: int, key: str) -> list[int]:
    """A fixed permutation of the buckets for one (salt, bucket_version, key)."""
    seed = mmh3.hash(f"pref{_SEP}{salt}{_SEP}{bucket_version}{_SEP}{key}", 0, False)
    h = mmh3.hash
    scores = [h(k, seed, False) for k in _BUCKET_KEYS]
    # sorted() is stable, so equal scores keep bucket order: ties break by bucket index.
    return sorted(range(BUCKETS), key=scores.__getitem__)


def allocate(
    salt: str, bucket_version: int, quotas: Sequence[tuple[str, int]], control: str
) -> list[int]:
    """Owner (index into ``quotas``) of each bucket; see the module docstring.

    ``quotas`` is the variants in config order with their bucket counts (summing to N).
    """
    if sum(n for _, n in quotas) != BUCKETS:
        raise ValueError("quotas must add up to the bucket count")
    names = [name for name, _ in quotas]
    ci = names.index(control)
    owner = [ci] * BUCKETS
    claimed = bytearray(BUCKETS)
    for i, (name, n) in enumerate(quotas):
        if i == ci or n == 0:
            continue
        taken = 0
        for b in preference(salt, bucket_version, f"variant{_SEP}{name}"):
            if taken == n:
                break
            if not claimed[b]:
                claimed[b] = 1
                owner[b] = i
                taken += 1
    return owner


def shadow_buckets(salt: str, bucket_version: int, shadow: str, n: int) -> list[bool]:
    """Which buckets are mirrored to the shadow variant (exactly ``n`` of them)."""
    mask = [False] * BUCKETS
    for b in preference(salt, bucket_version, f"shadow{_SEP}{shadow}")[:n]:
        mask[b] = True
    return mask
