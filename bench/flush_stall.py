"""How long the router's exposure flush holds the event loop, against a real Redis.

    .venv/bin/python bench/flush_stall.py [ROOT] [--units 2000,20000,50000] [--repeat 3]

ROOT: a checkout to import (A/B against another tree; default: this one). For each count of
new units (fresh ids, as wrk sends one per request), the demo experiment is assigned that many
units, then one flush runs while a ticker task yields to the loop as often as it can; the
longest gap between two of its turns is the longest the flush kept every other callback (the
requests) waiting. The collector is set as the gateway sets it once started (`gateway.app.tune_gc`:
start-up objects frozen, the young-generation threshold `--gc-threshold`, the gateway's default
unless given), so that the gaps are the gateway's, not those of Python's default collector.
Prints one line per count and writes bench/results/flush_stall.json (keyed by the checkout's
commit). The keys it writes live under a `bench-stall-*` prefix and are deleted after each count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
ap.add_argument("--units", default="2000,20000,50000", help="new units per flush, comma-separated")
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
ap.add_argument("--gc-threshold", type=int, default=None,
                help="young-generation threshold (default: the gateway's gc_threshold; 0: Python's 700)")
ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "flush_stall.json")
args = ap.parse_args()
ROOT = args.root.resolve()
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402
import uvloop  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from gateway.app import tune_gc  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from router import RouterService  # noqa: E402
from router.config import default_experiments  # noqa: E402

GC_THRESHOLD = GatewayConfig().gc_threshold if args.gc_threshold is None else args.gc_threshold


async def one_flush(svc: RouterService, ids: list[str]) -> tuple[float, float]:
    """(longest gap between the ticker's turns, the flush's wall time), in ms."""
    for u in ids:
        svc.router.assign("clf", u)
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await svc.flush_exposures()
    wall = time.perf_counter() - t0
    done = True
    await tick
    return max(gaps) * 1e3, wall * 1e3


async def main() -> list[dict]:
    client = aioredis.from_url(args.redis_url)
    rows = []
    try:
        for n in (int(x) for x in args.units.split(",")):
            prefix = f"bench-stall-{uuid.uuid4().hex[:8]}:"
            svc = RouterService(client, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix)
            await svc.resync()
            runs = [await one_flush(svc, [f"u{r}-{i}" for i in range(n)]) for r in range(args.repeat)]
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            row = {"new_units": n, "stall_ms": [round(s, 2) for s, _ in runs],
                   "flush_ms": [round(w, 2) for _, w in runs],
                   "stall_ms_median": round(statistics.median(s for s, _ in runs), 2)}
            rows.append(row)
            print(f"{n:>7} new units: longest stall {' '.join(f'{s:.1f}' for s, _ in runs)} ms; "
                  f"flush {' '.join(f'{w:.1f}' for _, w in runs)} ms", flush=True)
    finally:
        await client.aclose()
    return rows


if __name__ == "__main__":
    tune_gc(GC_THRESHOLD)
    result = uvloop.run(main())
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    import subprocess
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or str(ROOT)
    doc[commit] = {"rows": result, "gc_threshold": GC_THRESHOLD,
                   "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
