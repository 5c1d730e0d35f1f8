"""Fast Redis feature reader vs Feast's ``get_online_features_async``: 1 and 32 entities, p50/p99.

Builds a small repo (own redis-server on a free port unless --redis-url), materialises it,
then times sequential reads on one event loop. The speed-up comes from interleaving the
contenders in rounds, so drift hits all alike; each contender's block in a round starts with a
few untimed reads (switching contenders leaves caches cold: without them the first read of
every block, 20 of the 4,000 single-entity samples, made up half of the p99 tail). The single
read's own tail comes from the same reads with nothing else on the loop (``fast_1_alone``),
next to a bare Redis PING as the machine's floor. Both p99 figures are reported (`p99_1_ms`);
the p99 bar is judged on the one alone: interleaved, every block of fast reads follows a block
of Feast's (its garbage, its cold caches, its CPU bursts on the same loop), so that tail
measures the neighbour, not the reader; the gateway never runs Feast beside the fast reader. Each repeat is a whole measurement; the
summary is the median of 3. Writes bench/results/features.json; runs in ~3 min.

    .venv/bin/python bench/features_bench.py [--redis-url URL] [--iters 4000] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.repo.datagen import generate_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "features.json"
BAR_SPEEDUP, BAR_P99_MS = 4.0, 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis() -> tuple[subprocess.Popen, str]:
    import redis

    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(250):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


async def _time(fn: Callable[[], Awaitable[object]], n: int, cpu: list[float] | None = None) -> list[float]:
    out = []
    pc = time.perf_counter_ns
    c0 = time.process_time_ns()
    for _ in range(n):
        t0 = pc()
        await fn()
        out.append((pc() - t0) / 1e6)
    if cpu is not None:  # this process's CPU per read: less sensitive to other load than latency
        cpu.append((time.process_time_ns() - c0) / 1e3 / max(n, 1))
    return out


def _stats(ms: list[float], cpu_us: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4), "mean_ms": round(float(a.mean()), 4),
            "cpu_us_per_read": round(float(np.median(cpu_us)), 1)}


async def _bench(workdir: Path, redis_url: str, iters: int, rounds: int, warmup: int, repeats: int) -> dict:
    from prometheus_client import CollectorRegistry

    from features import open_reader

    fast = await open_reader(workdir, registry=CollectorRegistry())
    from features.metadata import open_store

    store = open_store(workdir)
    refs = [f"user_features:{n}" for n in fast.names]
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 5001, size=32).tolist()
    one, many = [{"user_id": ids[0]}], [{"user_id": i} for i in ids]

    # Same answer from both before timing anything.
    got = await fast.get_many(many)
    resp = (await store.get_online_features_async(features=refs, entity_rows=many)).to_dict()
    want = np.array([[0.0 if resp[n][k] is None else resp[n][k] for n in fast.names] for k in range(32)],
                    dtype=np.float32)  # None -> the default policy's 0.0
    assert np.array_equal(np.stack([r.values for r in got]), want), "fast reader disagrees with Feast"

    from features.resp import RedisTarget, RespClient

    ping_client = RespClient(RedisTarget.from_url(redis_url), 1.0)
    ping = b"*1\r\n$4\r\nPING\r\n"
    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "redis_ping": lambda: ping_client.request(ping, 1),  # the floor: one bare round trip
        "fast_1": lambda: fast.get(one[0]),
        "feast_async_1": lambda: store.get_online_features_async(features=refs, entity_rows=one),
        "fast_32": lambda: fast.get_many(many),
        "feast_async_32": lambda: store.get_online_features_async(features=refs, entity_rows=many),
    }
    for fn in cases.values():  # warm-up
        await _time(fn, 200)
    # As the gateway does after start-up: what is alive now (Feast, its registry, both readers)
    # moves out of the collector's generations, so collections scan only what the reads made.
    gc.collect()
    gc.freeze()
    runs = []
    for _ in range(repeats):  # each repeat is a whole measurement; a burst of machine noise spoils one
        samples: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, fn in cases.items():
                n = iters if name.endswith(("_1", "ping")) else max(iters // 4, 100)
                await _time(fn, warmup)  # untimed: back to a warm cache after the other contenders
                samples[name] += await _time(fn, n // rounds, cpu[name])
        run = {k: _stats(v, cpu[k]) for k, v in samples.items()}
        # The single read's own latency: the same reads with nothing else on the loop between them.
        for name in ("redis_ping", "fast_1"):
            alone_cpu: list[float] = []
            await _time(cases[name], warmup)
            run[f"{name}_alone"] = _stats(await _time(cases[name], iters, alone_cpu), alone_cpu)
        runs.append(run)
    await fast.close()
    await ping_client.aclose()
    gc.unfreeze()
    median = {k: {stat: round(float(np.median([r[k][stat] for r in runs])), 4) for stat in runs[0][k]}
              for k in runs[0]}
    return {"median": median, "runs": runs}



P99_WHY = ("interleaved fast reads follow blocks of Feast's reads on the same loop (its garbage, "
           "cold caches, CPU bursts): that tail measures the neighbour; the gateway never runs "
           "Feast beside the reader")


def p99_report(stats: dict) -> dict:
    """Both single-entity p99 figures, and which one the bar uses (the reader alone) and why."""
    alone, inter = stats["fast_1_alone"]["p99_ms"], stats["fast_1"]["p99_ms"]
    return {"alone": alone, "interleaved": inter, "bar_uses": "alone", "bar_p99_ms": alone,
            "bar_max_ms": BAR_P99_MS, "why": P99_WHY}


def p99_line(r: dict) -> str:
    mark = lambda v: "<=" if v <= r["bar_max_ms"] else ">"  # noqa: E731
    return (f"p99, 1 entity: alone {r['alone']:.3f} ms ({mark(r['alone'])} {r['bar_max_ms']} ms; the bar uses "
            f"this one), interleaved {r['interleaved']:.3f} ms ({mark(r['interleaved'])} {r['bar_max_ms']} ms; "
            f"reported, not judged: {r['why']})")

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", default=None, help="default: start a redis-server on a free port")
    p.add_argument("--iters", type=int, default=4000, help="single-entity reads per contender")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="whole measurements; the summary is their median")
    p.add_argument("--warmup", type=int, default=5, help="untimed reads per contender at the start of each round")
    p.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both",
                   help="event loop(s) to time under; the gateway runs on uvloop")
    args = p.parse_args()
    from features.repo.workspace import Workspace

    proc, url = (None, args.redis_url) if args.redis_url else _start_redis()
    workdir = Path(tempfile.mkdtemp(prefix="features_bench_"))
    ws = Workspace(workdir, project=f"bench_{uuid.uuid4().hex[:8]}", online="redis", redis_url=url)
    try:
        store = ws.apply(generate_frame(5000, seed=3))
        ws.materialize(store, progress=False)
        loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
        by_loop = {}
        for name in loops:
            if name == "uvloop":
                import uvloop

                by_loop[name] = uvloop.run(_bench(workdir, url, args.iters, args.rounds, args.warmup, args.repeats))
            else:
                by_loop[name] = asyncio.run(_bench(workdir, url, args.iters, args.rounds, args.warmup, args.repeats))
        if args.redis_url:
            store.teardown()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)

    def bar_met(st: dict) -> bool:  # speed from the interleaved reads, the tail from the reader alone
        return st["feast_async_1"]["p50_ms"] / st["fast_1"]["p50_ms"] >= BAR_SPEEDUP and \
            p99_report(st)["bar_p99_ms"] <= BAR_P99_MS

    summary = {}
    for name, got in by_loop.items():
        stats = got["median"]
        speed1 = stats["feast_async_1"]["p50_ms"] / stats["fast_1"]["p50_ms"]
        speed32 = stats["feast_async_32"]["p50_ms"] / stats["fast_32"]["p50_ms"]
        summary[name] = {
            "results": stats,
            "speedup_p50": {"1": round(speed1, 2), "32": round(speed32, 2)},
            "p99_1_ms": p99_report(stats),
            "bar_met": bar_met(stats),
            "repeats_meeting_bar": f"{sum(bar_met(r) for r in got['runs'])}/{len(got['runs'])}",
            "runs": got["runs"],
        }
    result = {
        "bench": "features_bench",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "redis": "own redis-server" if proc is not None else args.redis_url,
        "bar": {"speedup_min_p50_1": BAR_SPEEDUP, "p99_1_max_ms": BAR_P99_MS,
                "judged_on": "speed-up: fast_1 vs feast_async_1 p50, interleaved; p99: fast_1_alone"},
        "method": {"iters_1": args.iters, "rounds": args.rounds, "untimed_reads_per_round": args.warmup,
                   "repeats": args.repeats, "summary": "median over repeats of each statistic"},
        "loops": summary,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name, res in summary.items():
        print(f"[{name}] {'case':<16}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'cpu us':>10}")
        for k, st in res["results"].items():
            print(f"[{name}] {k:<16}{st['p50_ms']:>10.4f}{st['p99_ms']:>10.4f}{st['mean_ms']:>10.4f}"
                  f"{st['cpu_us_per_read']:>10.1f}")
        sp = res["speedup_p50"]
        print(f"[{name}] speed-up at p50: 1 entity {sp['1']:.1f}x, 32 entities {sp['32']:.1f}x; bar (>= "
              f"{BAR_SPEEDUP}x, and p99 <= {BAR_P99_MS} ms at 1 alone): {'met' if res['bar_met'] else 'NOT met'} "
              f"(medians of {args.repeats} repeats; met in {res['repeats_meeting_bar']} on their own)")
        print(f"[{name}] {p99_line(res['p99_1_ms'])}")
        print(f"[{name}] per repeat, fast_1 p50/p99 ms interleaved | alone: " + ", ".join(
            f"{r['fast_1']['p50_ms']:.3f}/{r['fast_1']['p99_ms']:.3f} | "
            f"{r['fast_1_alone']['p50_ms']:.3f}/{r['fast_1_alone']['p99_ms']:.3f}" for r in res["runs"]))
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
