"""Per-variant request outcomes, counted on the gateway's hot path for the guardrails.

One ``VariantOutcomes`` per (experiment, variant) is made when a config is compiled and
bound into that variant's prebuilt ``Assignment``, so recording an outcome is one attribute
read, one ``bisect`` over a fixed tuple and one list increment: no label look-up, no
allocation. Counts are cumulative; the flusher (``guardrails.py``) sends deltas.

What counts (decided by the gateway, documented in router/README.md):

* a successful answer: ``ok(latency_s)`` puts its latency into one of ``len(BOUNDS) + 1``
  log-spaced buckets (factor 2^(1/8), ≈ 9 % wide, 100 µs .. ~57 s, then overflow);
* an error attributable to the variant (``model_unavailable``, ``deadline_exceeded``,
  ``unavailable``, ``internal``): ``failed()``;
* anything else (a client's 4xx, load shed with 429, the feature store being down, a client
  that went away) is not counted at all: it says nothing about the variant.

``p99`` is computed from summed bucket counts (any number of replicas and time slots add up
exactly) and reported as the upper bound of the bucket holding the 99th percentile, so it
over-states the true value by at most one bucket width (≈ 9 %), never under-states it.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from .config import ExperimentConfig

__all__ = ["BOUNDS", "VariantOutcomes", "quantile_ms", "guard_id"]

# Upper bounds (seconds) of the latency buckets: 1e-4 * 2^(i/8), up to ~60 s.
BOUNDS: tuple[float, ...] = tuple(1e-4 * 2 ** (i / 8) for i in range(154))


class VariantOutcomes:
    """Cumulative outcome counts of one variant in this process (hot path: ``ok``/``failed``)."""

    __slots__ = ("errors", "latency")

    def __init__(self) -> None:
        self.errors = 0
        self.latency = [0] * (len(BOUNDS) + 1)  # successes per latency bucket

    def ok(self, latency_s: float) -> None:
        self.latency[bisect_left(BOUNDS, latency_s)] += 1

    def failed(self) -> None:
        self.errors += 1

    @property
    def requests(self) -> int:
        return self.errors + sum(self.latency)

    def __repr__(self) -> str:
        return f"<VariantOutcomes requests={self.requests} errors={self.errors}>"


def quantile_ms(buckets: Sequence[int] | dict[int, int], q: float = 0.99) -> float | None:
    """The q-quantile (ms) of bucketed latencies: the upper bound of the bucket holding it.

    ``buckets`` is a dense list or a sparse {bucket index: count}; None when empty. The
    overflow bucket reports the top bound (≈ 57,100 ms): a lower bound there.
    """
    items: Iterable[tuple[int, int]] = buckets.items() if isinstance(buckets, dict) else enumerate(buckets)
    pairs = sorted((i, n) for i, n in items if n > 0)
    total = sum(n for _, n in pairs)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in pairs:
        seen += n
        if seen >= rank:
            return BOUNDS[min(i, len(BOUNDS) - 1)] * 1e3
    return BOUNDS[-1] * 1e3  # pragma: no cover - rounding only


def guard_id(config: "ExperimentConfig", alloc_id: str) -> str:
    """Identity of what the guardrail window measures: the allocation plus every variant's
    target. Re-pointing a variant at another model version starts a fresh window (old
    figures must not dilute the new version's), as does any weight change."""
    key = [alloc_id, [(v.name, v.target.model, v.target.version) for v in config.variants]]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:12]
