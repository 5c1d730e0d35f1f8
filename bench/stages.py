"""`python -m bench.stages`: where a request's time goes inside the gateway, under wrk.

    python -m bench.stages [--connections 16,64] [--duration 8] [--env INFERGATE_X=V ...]

Starts Triton and the full path (`gateway_full`: features from Redis, inference over Triton's
HTTP port), and per concurrency a fresh gateway, a 3 s warm-up and a measured wrk run. From the
gateway's own histograms over the measured window (`/metrics` scraped before and after): the
mean and p50 / p90 / p99 of each stage (`features`: the online-feature read, `queue`: waiting
for the target's call, `inference`: the Triton call) and of the whole pipeline, Triton rows per
call and entities per Redis read (how many requests travel together), beside wrk's latency. Quantiles are interpolated inside histogram buckets, as
Prometheus' `histogram_quantile` does: coarse in the tail. Writes bench/results/stages.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import promtext
from bench.harness import DEFAULT_OUT
from bench.queue_delay import GATEWAY_US, staged_repository
from bench.targets import drop_keys, prepare_features, probe, start_gateway, target_specs
from bench.wrk import parse_output, wrk_command
from runtime.triton import TritonRuntime, TritonServer

STAGE = "infergate_stage_duration_seconds"
TOTAL = "infergate_request_duration_seconds"
QUANTILES = (0.5, 0.9, 0.99)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 3)


def summarise(before: promtext.Samples, after: promtext.Samples) -> dict[str, dict[str, float | None]]:
    """Mean and quantiles (ms) of each stage and of the pipeline over the window."""
    out: dict[str, dict[str, float | None]] = {}
    series = [(st, STAGE, {"stage": st}) for st in ("features", "queue", "inference")] + [("pipeline", TOTAL, {})]
    for name, metric, labels in series:
        row: dict[str, float | None] = {
            "mean": _ms(promtext.avg_batch(before, after, f"{metric}_sum", f"{metric}_count", **labels))}
        for q in QUANTILES:
            row[f"p{round(q * 100)}"] = _ms(promtext.quantile(before, after, metric, q, **labels))
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", default="16,64")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--env", action="append", default=[], help="INFERGATE_X=V for the gateway (repeat)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in a.env)
    raw = Path(tempfile.mkdtemp(prefix="stages-"))
    features = prepare_features(raw / "feature-repo", a.redis_url, raw / "features.log")
    spec = target_specs(["gateway_full"], features, ("--redis-url", a.redis_url))[0]
    cells = []
    # The model at the gateway's queue delay, as the harness measures the gateway (bench/queue_delay.py).
    repo = staged_repository(raw / "model_repo", delay_us=GATEWAY_US)
    with TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo, log_path=raw / "triton.log") as triton:
        for c in (int(x) for x in a.connections.split(",")):
            gw = start_gateway(spec, triton.grpc_url, raw / f"gateway-{c}.log", "stages", triton.http_url, env)
            try:
                reason = probe(gw.url, spec.mode)
                if reason:
                    raise RuntimeError(reason)
                url = f"{gw.url}/v1/infer"
                subprocess.run(wrk_command(url, spec.mode, c, 3), capture_output=True, check=True)
                before = promtext.scrape(f"{gw.url}/metrics")
                r = subprocess.run(wrk_command(url, spec.mode, c, a.duration), capture_output=True, text=True,
                                   check=True)
                after = promtext.scrape(f"{gw.url}/metrics")
            finally:
                gw.stop()
                drop_keys(gw)
            res = parse_output(r.stdout)
            cell = {"connections": c, "rps": round(res.rps), "non2xx": res.non2xx,
                    "wrk_ms": {k: res.latency_ms.get(k) for k in ("mean", "p50", "p90", "p99")},
                    "rows_per_call": _round(promtext.avg_batch(before, after, "infergate_batch_rows_sum",
                                                        "infergate_batch_rows_count")),
                    "feature_keys_per_read": _round(promtext.avg_batch(
                        before, after, "features_batch_size_sum", "features_batch_size_count")),
                    "stages_ms": summarise(before, after)}
            cells.append(cell)
            print(json.dumps(cell), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "stages.json"
    path.write_text(json.dumps({"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "command": " ".join(sys.argv), "env": env, "cells": cells}, indent=1))
    print(f"wrote {path}")
    return 0 if all(c["non2xx"] == 0 for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
