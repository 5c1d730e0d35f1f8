"""`make demo`: the whole job on embedded defaults, with a real Triton, then a summary.

1. Feast: apply the demo feature repo and materialise it into Redis when one answers at
   $REDIS_URL (default 127.0.0.1:6379), else into Feast's sqlite online store.
2. Start Triton (clf v1 and v2) and the gateway (experiment `clf-demo`: a → v1, b → v2, 50/50).
3. Send a burst of requests over /v1/infer and KServe v2, each with a user id whose online
   features the gateway joins, print a per-variant summary (count, p50, p99, errors), stop.
Exit status 0 only when every request was answered with 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np

from runtime.stack import Stack
from runtime.triton import ROOT

USERS = 10_000


def prepare_features(redis_url: str) -> None:
    for step in (["apply", "--online", "auto", "--rows", str(USERS)], ["materialize"]):
        subprocess.run([sys.executable, "-m", "features", *step], cwd=ROOT, check=True,
                       env={**os.environ, "REDIS_URL": redis_url})


async def burst(url: str, n: int, concurrency: int, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    stats: dict[str, dict] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        user = int(rng.zipf(1.3)) % USERS          # skewed, like real traffic
        unit = f"visitor-{rng.integers(0, 50_000)}"
        inputs = rng.standard_normal(4).astype(np.float32).round(4).tolist()
        async with sem:
            t0 = time.perf_counter()
            if i % 2:
                r = await client.post("/v1/infer", json={"model": "clf", "unit_id": unit, "timings": True,
                                                         "entity": {"user_id": user}, "inputs": inputs})
                body = r.json()
                variant = body.get("variant", "?") if r.status_code == 200 else "error"
                inside = body["timings_ms"]["total"] if r.status_code == 200 else None
            else:
                doc = {"parameters": {"user_id": user, "unit_id": unit},
                       "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": inputs}]}
                r = await client.post("/v2/models/clf/infer", json=doc)
                variant = r.json()["parameters"]["variant"] if r.status_code == 200 else "error"
                inside = None
            ms = (time.perf_counter() - t0) * 1e3
        s = stats.setdefault(variant, {"lat": [], "inside": [], "errors": 0, "codes": {}})
        s["lat"].append(ms)
        if inside is not None:
            s["inside"].append(inside)
        if r.status_code != 200:
            s["errors"] += 1
            s["codes"][r.status_code] = s["codes"].get(r.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(one(client, i) for i in range(n)))
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000)
    # A Python client saturates long before the gateway: keep its own queueing out of the
    # latencies it reports.
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args(argv)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    t0 = time.monotonic()
    prepare_features(redis_url)
    with Stack(gateway_args=["--features", "auto", "--log-level", "info"]) as stack:
        print(f"\nTriton {stack.triton.grpc_url} (gRPC) · gateway {stack.gateway.url} · logs {stack.log_dir}")
        sample = httpx.post(f"{stack.gateway.url}/v1/infer", json={
            "model": "clf", "unit_id": "visitor-1", "entity": {"user_id": 42},
            "inputs": [0.5, -1.0, 0.25, 2.0], "timings": True}).json()
        print(f"one request: {sample}\n")
        asyncio.run(burst(stack.gateway.url, 200, args.concurrency, seed=1))   # warm-up, not reported
        t1 = time.perf_counter()
        stats = asyncio.run(burst(stack.gateway.url, args.requests, args.concurrency))
        wall = time.perf_counter() - t1
        metrics = httpx.get(f"{stack.gateway.url}/metrics").text
    rows = sum(float(v) for v in re.findall(r"^infergate_batch_rows_sum\{[^}]*\} (\S+)$", metrics, re.M))
    calls = sum(float(v) for v in re.findall(r"^infergate_batch_rows_count\{[^}]*\} (\S+)$", metrics, re.M))
    total = sum(len(s["lat"]) for s in stats.values())
    errors = sum(s["errors"] for s in stats.values())
    print(f"{total} requests in {wall:.2f} s from a Python client at concurrency {args.concurrency} "
          f"(client-bound; `make bench` measures the gateway with wrk); "
          f"{calls:.0f} Triton calls, {rows / max(calls, 1):.1f} rows per call")
    print("latency: as the client saw it, and inside the gateway (its own timing of /v1 requests)")
    print(f"{'variant':<8}{'count':>8}{'share':>8}{'p50 ms':>9}{'p99 ms':>9}{'gw p50':>9}{'gw p99':>9}{'errors':>8}")
    for name in sorted(stats):
        s = stats[name]
        lat, inside = np.array(s["lat"]), np.array(s["inside"] or [np.nan])
        print(f"{name:<8}{len(lat):>8}{len(lat) / total:>8.1%}{np.percentile(lat, 50):>9.2f}"
              f"{np.percentile(lat, 99):>9.2f}{np.percentile(inside, 50):>9.2f}{np.percentile(inside, 99):>9.2f}"
              f"{s['errors']:>8}" + (f"  {s['codes']}" if s["codes"] else ""))
    print(f"done in {time.monotonic() - t0:.1f} s; {'OK' if errors == 0 else f'{errors} ERRORS'}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
