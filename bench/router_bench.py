"""Router hot-path benchmark: nanoseconds per assignment decision.

Usage: .venv/bin/python bench/router_bench.py [--units 200000] [--repeat 5]
Prints JSON to stdout and writes bench/results/router.json. Runs in a few seconds.
Timed with the thread's CPU clock (``time.thread_time_ns``): the loops are single-threaded
and CPU-bound, and on a shared machine wall-clock time mostly measures the other tenants.
It also runs against an older tree (``PYTHONPATH=<export of a commit>``) for before/after.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import mmh3

from router import Router

try:
    from router import VariantOutcomes
except ImportError:  # an older tree, benchmarked for a before/after comparison
    VariantOutcomes = None
from router.config import parse_experiment


def _config(n_variants: int, shadow: bool):
    weights = [10_000 // n_variants] * n_variants
    weights[0] += 10_000 - sum(weights)
    body = {
        "name": f"bench-{n_variants}",
        "model": "clf",
        "salt": "bench",
        "variants": [
            {"name": f"v{i}", "weight": w / 100, "target": {"model": "clf", "version": str(i + 1)}}
            for i, w in enumerate(weights)
        ],
        "allowlist": {"vip-1": "v0"},
    }
    if shadow:
        body["shadow"] = {"variant": "sh", "share": 10, "target": {"model": "clf", "version": "9"}}
    return parse_experiment(body)


def _best_ns(fn, units: list[str], repeat: int, reset=None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if reset is not None:
            reset()  # untimed: what the service's flusher does every interval
        t0 = time.thread_time_ns()
        fn(units)
        best = min(best, (time.thread_time_ns() - t0) / len(units))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "router.json"))
    args = ap.parse_args()
    units = [f"user-{i * 7919}" for i in range(args.units)]
    results: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "units": args.units,
        "repeat": args.repeat,
    }

    def loop_hash(us: list[str]) -> None:
        h = mmh3.hash
        for u in us:
            h(u, 1234, False) % 10_000

    results["ns_raw_mmh3_mod"] = round(_best_ns(loop_hash, units, args.repeat), 1)
    for n_variants, shadow in ((2, False), (3, True)):
        t0 = time.perf_counter()
        router = Router.from_configs([_config(n_variants, shadow)])
        compile_ms = (time.perf_counter() - t0) * 1e3

        def loop(us: list[str], assign=router.assign) -> None:
            for u in us:
                assign("clf", u)

        def loop_override(us: list[str], assign=router.assign) -> None:
            for u in us:
                assign("clf", u, "v1", True)

        def drain(exp=router.experiment(f"bench-{n_variants}")) -> None:
            if isinstance(getattr(exp, "units", None), list):
                exp.units.clear()  # the flusher empties the unit list each flush interval

        key = f"{n_variants}v{'_shadow' if shadow else ''}"
        results[f"ns_per_decision_{key}"] = round(_best_ns(loop, units, args.repeat, drain), 1)
        results[f"ns_per_override_{key}"] = round(_best_ns(loop_override, units, args.repeat), 1)
        results[f"compile_ms_{key}"] = round(compile_ms, 2)
    results["ns_per_decision"] = results["ns_per_decision_2v"]
    if VariantOutcomes is not None:
        # The gateway's per-request cost for the guardrails: one VariantOutcomes.ok() per answer.
        outcome = VariantOutcomes()
        latencies = [((i * 7919) % 5000) / 1e5 for i in range(len(units))]  # 0-50 ms

        def loop_outcome(lats: list[float], ok=outcome.ok) -> None:
            for x in lats:
                ok(x)

        results["ns_per_outcome_ok"] = round(_best_ns(loop_outcome, latencies, args.repeat), 1)
    results["note"] = "ns_per_decision includes the Python loop and call overhead (Router.assign)"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
