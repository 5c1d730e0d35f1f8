"""`make demo`: the whole job on embedded defaults, with a real Triton, then a summary.

1. Feast: apply the demo feature repo and materialise it into Redis when one answers at
   $REDIS_URL (default 127.0.0.1:6379), else into Feast's sqlite online store.
2. Start Triton (clf v1 and v2) and the gateway (experiment `clf-demo`: a → v1, b → v2, 50/50).
3. Send a burst of requests, each with a user id whose online features the gateway joins,
   and print the gateway's own figures first (per variant: requests, p50, p99 from its
   `infergate_request_duration_seconds` histogram, errors), then what the client saw.
   The burst is driven by wrk when it is installed (`make wrk`): a Python client saturates
   long before the gateway, and its own queueing would read as the gateway's latency. Without
   wrk, a Python client at low concurrency sends /v1 and KServe v2 requests instead.
Exit status 0 only when every request was answered with 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from bench import promtext
from bench.wrk import WrkError, run_wrk, wrk_binary, wrk_command
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


def wrk_burst(url: str, mode: str, connections: int, duration_s: float) -> dict:
    """The burst through wrk (bench/infer.lua); a summary of what the client saw."""
    path = "/v1/infer" if mode in ("v1", "entity") else ""   # the v2 mode sets its own path
    res = run_wrk(wrk_command(url + path, mode, connections, duration_s, threads=1,
                              tag=f"demo{time.time_ns()}", entities=USERS), timeout_s=duration_s + 30)
    return {"client": f"wrk, {connections} connections, {duration_s:g} s", "requests": res.requests,
            "rps": res.rps, "p50": res.latency_ms["p50"], "p99": res.latency_ms["p99"],
            "errors": res.non2xx + sum(v for k, v in res.socket_errors.items() if k != "status"),
            "raw": res.to_dict()}


def python_burst(url: str, n: int, concurrency: int) -> dict:
    """The burst through httpx (no wrk): /v1 and KServe v2, each joined to a user's features."""
    t0 = time.perf_counter()
    stats = asyncio.run(burst(url, n, concurrency))
    wall = time.perf_counter() - t0
    lat = np.concatenate([np.array(s["lat"]) for s in stats.values()])
    return {"client": f"Python httpx client, concurrency {concurrency} (wrk not installed: `make wrk`)",
            "requests": len(lat), "rps": len(lat) / wall, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "errors": sum(s["errors"] for s in stats.values())}


def gateway_table(before: promtext.Samples, after: promtext.Samples) -> list[str]:
    """Per variant, from the gateway's own metrics over the burst: a clean fixed-width table."""
    reqs = promtext.delta(promtext.by_label(after, "infergate_requests_total", "variant"),
                          promtext.by_label(before, "infergate_requests_total", "variant"))
    errs = promtext.delta(promtext.by_label(after, "infergate_errors_total", "variant"),
                          promtext.by_label(before, "infergate_errors_total", "variant"))
    total = sum(reqs.values()) or 1
    lines = [f"{'variant':<9}{'requests':>10}{'share':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for v in sorted(k for k, n in reqs.items() if n > 0):
        q = [promtext.quantile(before, after, "infergate_request_duration_seconds", x, variant=v)
             for x in (0.5, 0.99)]
        p50, p99 = (f"{x * 1e3:.2f}" if x is not None else "-" for x in q)
        lines.append(f"{v:<9}{reqs[v]:>10,.0f}{reqs[v] / total:>8.1%}{p50:>9}{p99:>9}{errs.get(v, 0):>8,.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="wrk burst, seconds")
    p.add_argument("--connections", type=int, default=16, help="wrk connections")
    p.add_argument("--requests", type=int, default=4000, help="without wrk: requests")
    # A Python client saturates long before the gateway: keep its own queueing out of the
    # latencies it reports.
    p.add_argument("--concurrency", type=int, default=8, help="without wrk: concurrency")
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
        before = promtext.scrape(f"{stack.gateway.url}/metrics")
        try:
            client = wrk_burst(stack.gateway.url, "entity", args.connections, args.duration) \
                if wrk_binary() else python_burst(stack.gateway.url, args.requests, args.concurrency)
        except WrkError as exc:
            print(f"wrk failed ({exc}); using the Python client")
            client = python_burst(stack.gateway.url, args.requests, args.concurrency)
        after = promtext.scrape(f"{stack.gateway.url}/metrics")
    calls = promtext.total(after, "infergate_batch_rows_count") - promtext.total(before, "infergate_batch_rows_count")
    rows = promtext.total(after, "infergate_batch_rows_sum") - promtext.total(before, "infergate_batch_rows_sum")
    errors = client["errors"]
    print("inside the gateway (its own infergate_request_duration_seconds, from /metrics):")
    for line in gateway_table(before, after):
        print(f"  {line}")
    print(f"  {calls:,.0f} Triton calls, {rows / max(calls, 1):.1f} rows per call")
    print(f"as the client saw it ({client['client']}): {client['requests']:,} requests, "
          f"{client['rps']:,.0f} req/s, p50 {client['p50']:.2f} ms, p99 {client['p99']:.2f} ms "
          f"(client and gateway share this machine's cores; `make bench` measures with care)")
    print(f"done in {time.monotonic() - t0:.1f} s; {'OK' if errors == 0 else f'{errors:.0f} ERRORS'}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
