"""The locustfile's pure parts: skewed id sampling and the observed split with its SRM test.

Kept apart from bench/locustfile.py so they are tested without importing locust (which
monkey-patches the process with gevent).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from scipy.stats import chisquare


class ZipfSampler:
    """Bounded Zipf over ranks 1..n (P(k) ~ k^-s), drawn in blocks to keep numpy off the
    per-request path. Ids are shuffled ranks, so heavy units are not just the small ids."""

    __slots__ = ("_cdf", "_ids", "_rng", "_buf", "_pos")

    def __init__(self, n: int, s: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        w = np.arange(1, n + 1, dtype=np.float64) ** -s
        self._cdf = np.cumsum(w / w.sum())
        self._ids = rng.permutation(n) + 1
        self._rng = rng
        self._buf: list[int] = []
        self._pos = 0

    def __repr__(self) -> str:
        return f"<ZipfSampler n={len(self._ids)} [buffered {len(self._buf) - self._pos}]>"

    def draw(self) -> int:
        if self._pos >= len(self._buf):
            ranks = np.searchsorted(self._cdf, self._rng.random(4096), side="right")
            self._buf = self._ids[np.minimum(ranks, len(self._ids) - 1)].tolist()
            self._pos = 0
        self._pos += 1
        return self._buf[self._pos - 1]


class SplitTally:
    """Answers per variant, per request and per distinct unit; mergeable across workers."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.units: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"<SplitTally requests={sum(self.requests.values())} units={sum(map(len, self.units.values()))}>"

    def add(self, variant: str, unit: str) -> None:
        self.requests[variant] += 1
        self.units.setdefault(variant, set()).add(unit)

    def merge(self, data: dict[str, Any]) -> None:
        self.requests.update(data["requests"])
        for v, units in data["units"].items():
            self.units.setdefault(v, set()).update(units)

    def drain(self) -> dict[str, Any]:
        data = {"requests": dict(self.requests), "units": {v: sorted(u) for v, u in self.units.items()}}
        self.requests, self.units = Counter(), {}
        return data


def parse_weights(raw: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        name, _, w = item.partition("=")
        out[name.strip()] = float(w)
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"weights must be variant=weight pairs, got {raw!r}")
    return out


def split_summary(tally: SplitTally, weights: dict[str, float], alpha: float) -> dict[str, Any]:
    """Observed shares next to the weights; the SRM chi-square on distinct units."""
    total_w = sum(weights.values())
    expected = {v: w / total_w for v, w in weights.items()}
    names = sorted(set(weights) | set(tally.requests))
    n_req = sum(tally.requests.values())
    unit_counts = {v: len(tally.units.get(v, ())) for v in names}
    n_units = sum(unit_counts.values())
    seen: Counter[str] = Counter(u for units in tally.units.values() for u in units)
    p_value = None
    if n_units and len(weights) > 1 and set(unit_counts) <= set(weights):
        p_value = float(chisquare([unit_counts[v] for v in weights],
                                  [n_units * expected[v] for v in weights]).pvalue)
    return {
        "weights": expected,
        "requests": {v: tally.requests.get(v, 0) for v in names},
        "request_shares": {v: (tally.requests.get(v, 0) / n_req if n_req else None) for v in names},
        "units": unit_counts,
        "unit_shares": {v: (unit_counts[v] / n_units if n_units else None) for v in names},
        "srm_p_value": p_value,
        "srm_alpha": alpha,
        "srm_flagged": p_value is not None and p_value < alpha,
        "units_in_several_variants": sum(1 for c in seen.values() if c > 1),
        "unexpected_variants": sorted(set(tally.requests) - set(weights)),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"{'variant':<10}{'weight':>8}{'req share':>11}{'requests':>10}{'unit share':>12}{'units':>8}"]
    for v in s["requests"]:
        w = s["weights"].get(v)
        rs, us = s["request_shares"][v], s["unit_shares"][v]
        lines.append(f"{v:<10}{w if w is not None else float('nan'):>8.3f}{rs or 0:>11.4f}"
                     f"{s['requests'][v]:>10}{us or 0:>12.4f}{s['units'][v]:>8}")
    p = s["srm_p_value"]
    lines.append(f"SRM chi-square on distinct units: p = {p if p is None else f'{p:.4g}'} "
                 f"({'FLAGGED' if s['srm_flagged'] else 'ok'} at alpha {s['srm_alpha']}); "
                 f"units answered by several variants: {s['units_in_several_variants']}")
    return "\n".join(lines)
