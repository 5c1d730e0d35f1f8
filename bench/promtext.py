"""Prometheus text scraping for the harness: samples as a flat dict, and deltas between scrapes."""

from __future__ import annotations

import re
import urllib.request
from typing import Mapping

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Our own small parser: prometheus_client's renames counters (adds `_total`), and the names
# must match what the servers print.
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse(text: str) -> Samples:
    """`{(sample name as printed, sorted labels): value}` for every sample in a text page."""
    out: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            body, _, tail = rest.rpartition("}")
            labels = tuple(sorted((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                                  for k, v in _LABEL.findall(body)))
        else:
            name, _, tail = line.partition(" ")
            labels = ()
        fields = tail.split()
        if not fields:
            continue
        try:
            out[(name.strip(), labels)] = float(fields[0])
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 5.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Samples of `name` summed per value of one label (e.g. requests per variant)."""
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(after) | set(before))}


def avg_batch(before: Samples, after: Samples, sum_name: str, count_name: str, **labels: str) -> float | None:
    """Mean over the interval, from a histogram's (or counters') sum and count (rows per call,
    seconds per observation); `labels` select the series (summed over the others)."""
    calls = total(after, count_name, **labels) - total(before, count_name, **labels)
    if calls <= 0:
        return None
    return (total(after, sum_name, **labels) - total(before, sum_name, **labels)) / calls


def quantile(before: Samples, after: Samples, name: str, q: float, **labels: str) -> float | None:
    """The `q`-quantile (0..1) of a histogram `name` over the interval between two scrapes,
    interpolated linearly inside its bucket as Prometheus' `histogram_quantile` does; None
    when nothing was observed. `labels` select the series (summed over the others)."""
    want = set(labels.items())
    counts: dict[float, float] = {}
    for (n, ls), v in after.items():
        if n != f"{name}_bucket" or not want <= set(ls):
            continue
        le = dict(ls)["le"]
        bound = float("inf") if le == "+Inf" else float(le)
        counts[bound] = counts.get(bound, 0.0) + v - before.get((n, ls), 0.0)
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] <= 0:
        return None
    rank = q * counts[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        if counts[b] >= rank:
            if b == float("inf"):
                return prev_bound
            in_bucket = counts[b] - prev_count
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / in_bucket if in_bucket else 0.0)
        prev_bound, prev_count = b, counts[b]
    return prev_bound
