"""Pure aggregation: a cell is the median of its runs; ratios compare gateway to Triton-direct."""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping, Sequence

LATENCY_KEYS = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p999"))
# A cell whose fastest run beat its slowest by more than this is reported as unsteady: a steady
# cell's runs agree within ~10 %, and this VM's swings reach ±25 % within minutes.
UNSTEADY_SPREAD = 1.25


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 4) if vals else None


def run_record(wrk: Mapping[str, Any], avg_batch: float | None, triton_avg_batch: float | None,
               cpu_s: Mapping[str, float], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One raw run as stored under a cell's "runs": wrk's summary plus the server-side deltas."""
    lat = wrk["latency_ms"]
    rec = {"rps": wrk["rps"], **{k: lat[src] for k, src in LATENCY_KEYS},
           "errors": wrk["non2xx"] + sum(v for k, v in wrk["socket_errors"].items() if k != "status"),
           "non2xx": wrk["non2xx"], "avg_batch": avg_batch, "triton_avg_batch": triton_avg_batch,
           "cpu_s": {k: round(v, 3) for k, v in cpu_s.items()}, "wrk": dict(wrk)}
    if extra:
        rec.update(extra)
    return rec


def median_cell(target: str, connections: int, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cell: medians of each figure over its runs, taken figure by figure; errors summed."""
    if not runs:
        raise ValueError("a cell needs at least one run")
    cpu_names = sorted({k for r in runs for k in r["cpu_s"]})
    return {
        "target": target,
        "connections": connections,
        "rps": _median(r["rps"] for r in runs),
        **{k: _median(r[k] for r in runs) for k, _ in LATENCY_KEYS},
        "errors": sum(int(r["errors"]) for r in runs),
        "avg_batch": _median(r.get("avg_batch") for r in runs),
        "triton_avg_batch": _median(r.get("triton_avg_batch") for r in runs),
        "cpu_s": {k: _median(r["cpu_s"].get(k) for r in runs) for k in cpu_names},
        "rps_spread": rps_spread(runs),
        "runs": list(runs),
    }


def rps_spread(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """The fastest run's throughput over the slowest's (1.0: the runs agree); None below two runs."""
    rps = [r["rps"] for r in runs if r.get("rps")]
    return round(max(rps) / min(rps), 2) if len(rps) > 1 else None


def unsteady(cells: Iterable[Mapping[str, Any]], limit: float = UNSTEADY_SPREAD) -> list[str]:
    """The cells whose runs disagree by more than ``limit`` (their medians are weak evidence)."""
    return [f"{c['target']} c={c['connections']}: runs {c['rps_spread']:.2f}x apart"
            for c in cells if (c.get("rps_spread") or 0) > limit]


def find_cell(cells: Iterable[Mapping[str, Any]], target: str, connections: int) -> Mapping[str, Any] | None:
    return next((c for c in cells if c["target"] == target and c["connections"] == connections), None)


def ratios(cells: Sequence[Mapping[str, Any]], gateway: str = "gateway_full",
           direct: str = "triton_direct") -> dict[str, float | None]:
    """The headline numbers: gateway throughput over Triton-direct, and added median latency."""
    out: dict[str, float | None] = {}
    targets = sorted({c["target"] for c in cells if c["target"] != direct})
    conns = sorted({c["connections"] for c in cells})
    for t in [gateway, *[t for t in targets if t != gateway]]:
        prefix = "gateway" if t == gateway else t
        for n in conns:
            g, d = find_cell(cells, t, n), find_cell(cells, direct, n)
            ok = g is not None and d is not None
            out[f"{prefix}_over_direct_rps_c{n}"] = (
                round(g["rps"] / d["rps"], 4) if ok and g["rps"] and d["rps"] else None)
            out[f"{prefix}_added_p50_ms_c{n}"] = (
                round(g["p50_ms"] - d["p50_ms"], 4) if ok and g["p50_ms"] is not None
                and d["p50_ms"] is not None else None)
    # The three the issue names, present even when their cells were not run.
    for key in ("gateway_over_direct_rps_c64", "gateway_over_direct_rps_c256", "gateway_added_p50_ms_c1"):
        out.setdefault(key, None)
    return out


def pair_ratios(cells: Sequence[Mapping[str, Any]], direct: str = "triton_direct") -> dict[str, float | None]:
    """For interleaved runs (`--interleave`): the median over runs of each run's gateway figure
    over the Triton-direct run just before it (throughput, p99), per concurrency; a slow spell
    then moves both halves of a pair instead of one side's cell."""
    out: dict[str, float | None] = {}
    for g in cells:
        if g["target"] == direct:
            continue
        d = find_cell(cells, direct, g["connections"])
        if d is None:
            continue
        n = g["connections"]
        pairs = list(zip(d["runs"], g["runs"]))
        out[f"rps_c{n}"] = _median([b["rps"] / a["rps"] if a["rps"] else None for a, b in pairs])
        out[f"p99_c{n}"] = _median([b["p99_ms"] / a["p99_ms"] if a.get("p99_ms") and b.get("p99_ms") is not None
                                    else None for a, b in pairs])
    return out


def median_of(values: Iterable[float | None]) -> float | None:
    return _median(values)


def cpu_per_request(runs: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Each process group's CPU µs per request (its `cpu_s` / requests), median over the runs."""
    names = sorted({k for r in runs for k in r.get("cpu_us_per_request", {})})
    return {k: _median(r.get("cpu_us_per_request", {}).get(k) for r in runs) for k in names}


def peer_ratios(cells: Sequence[Mapping[str, Any]], peer_prefix: str = "peer_") -> dict[str, float | None]:
    """Each gateway target against each serving peer, same run: throughput over the peer's,
    and p99 over the peer's (issue 17's bar at c=64: >= 5x and <= 1/5)."""
    out: dict[str, float | None] = {}
    peers = sorted({c["target"] for c in cells if c["target"].startswith(peer_prefix)})
    ours = sorted({c["target"] for c in cells if c["target"].startswith("gateway")})
    for g in ours:
        for p in peers:
            name = p[len(peer_prefix):]
            for n in sorted({c["connections"] for c in cells}):
                a, b = find_cell(cells, g, n), find_cell(cells, p, n)
                if a is None or b is None:
                    continue
                out[f"{g}_over_{name}_rps_c{n}"] = round(a["rps"] / b["rps"], 3) if a["rps"] and b["rps"] else None
                out[f"{g}_p99_over_{name}_c{n}"] = (round(a["p99_ms"] / b["p99_ms"], 4)
                                                    if a["p99_ms"] and b["p99_ms"] else None)
    return out
