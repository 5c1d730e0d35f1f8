"""`python -m bench.grpc_bench`: the gateway's KServe v2 gRPC front against Triton's own gRPC port.

    python -m bench.grpc_bench [--connections 1,64,256] [--duration 5] [--runs 3] [--procs 2]

One Triton (clf) and one gateway (`--features off --grpc-port`, routing 50/50 to clf v1/v2 and
micro-batching, its inference calls over Triton's HTTP port and admission `static`, as in the
harness); each side at its own best queue delay, as the harness runs them (Triton-direct
at the model's 100 µs, the batching gateway at 0: `bench/queue_delay.py`; the model is reloaded
from a staged copy when the target changes, then warmed up for `RELOAD_WARMUP_S` before a
measured run); the same load generator against both: `--procs` spawned processes (one at
c=1), each with its share of the concurrency as coroutines on a uvloop event loop, each
coroutine sending one ModelInfer after another (closed loop) over `grpc.aio` channels (one per
64 streams). Requests are serialised before the run (a `[1, 20]` FP32 tensor in
`raw_input_contents`; for the gateway 512 distinct unit ids per process, for Triton version 1)
and answers are not parsed, so the client spends its CPU on gRPC alone. Every call in flight at
the end is awaited and counted, so the gateway's `infergate_requests_total` delta must equal
the client's count exactly (checked; a mismatch or any failed call is a violation, exit 1).

Each cell: a warm-up, then `--runs` runs per target, the two targets interleaved run by run (the
load of a shared machine drifts within minutes); the cell is the median (figure by figure). CPU
seconds per group (gateway, triton, its stubs, the load generator) from /proc, and the load
average, are in the JSON. Results: `bench/results/grpc/latest.json` + a dated copy, and
`throughput.png` / `latency.png` beside them. There is no perf_analyzer in the pytriton wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import secrets
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import procstat, promtext, report, stats
from bench.queue_delay import DIRECT_US, GATEWAY_US, RELOAD_WARMUP_S, QueueDelay, staged_repository

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "grpc"
_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAMS_PER_CHANNEL = 64
UNITS_PER_PROC = 512


def _requests(gateway: bool, tag: str) -> list[bytes]:
    from tritonclient.grpc import service_pb2

    x = np.linspace(0.1, 2.0, 20, dtype=np.float32).reshape(1, 20)
    out = []
    for i in range(UNITS_PER_PROC if gateway else 1):
        req = service_pb2.ModelInferRequest(model_name="clf", model_version="" if gateway else "1")
        if gateway:
            req.parameters["unit_id"].string_param = f"{tag}-{i}"
        req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 20])
        req.raw_input_contents.append(x.tobytes())
        out.append(req.SerializeToString())
    return out


async def _drive(target: str, bodies: list[bytes], concurrency: int, duration_s: float,
                 conn: Any, go: Any) -> dict[str, Any]:
    import grpc

    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, -(-concurrency // STREAMS_PER_CHANNEL)))]
    calls = [ch.unary_unary(_METHOD) for ch in channels]  # bytes in, bytes out: nothing parsed
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 10)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    conn.send("ready")
    while not go.is_set():  # every process connected: start together
        await asyncio.sleep(0.002)
    t_start = time.perf_counter()
    end = t_start + duration_s

    async def loop(k: int) -> None:
        call, n, i = calls[k % len(calls)], len(bodies), k
        perf = time.perf_counter
        while perf() < end:
            t0 = perf()
            try:
                await call(bodies[i % n], timeout=10)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            latencies.append(perf() - t0)
            i += concurrency

    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    for ch in channels:
        await ch.close()
    return {"latencies": np.asarray(latencies, dtype=np.float64), "errors": errors, "elapsed": elapsed}


def _worker(target: str, gateway: bool, tag: str, concurrency: int, duration_s: float, go: Any,
            conn: Any) -> None:
    """One load-generator process: its own event loop, its share of the concurrency."""
    import uvloop

    bodies = _requests(gateway, tag)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        out = uvloop.run(_drive(target, bodies, concurrency, duration_s, conn, go))
    except Exception as exc:  # reported to the parent, which records it as a violation
        conn.send({"fatal": f"{type(exc).__name__}: {exc}"})
        return
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    conn.send(out)


def run_load(target: str, gateway: bool, concurrency: int, duration_s: float, procs: int, tag: str) -> dict[str, Any]:
    """Spawn the load generators, start them together, merge what they measured."""
    ctx = mp.get_context("spawn")
    n_procs = max(1, min(procs, concurrency))
    shares = [concurrency // n_procs + (1 if i < concurrency % n_procs else 0) for i in range(n_procs)]
    go = ctx.Event()
    pipes, workers = [], []
    for i, share in enumerate(shares):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(target, gateway, f"{tag}p{i}", share, duration_s, go, child),
                        daemon=True)
        p.start()
        pipes.append(parent)
        workers.append(p)
    results: list[dict[str, Any]] = []
    try:
        for parent in pipes:  # "ready", or what went wrong
            msg = parent.recv() if parent.poll(60) else {"fatal": "a load generator did not connect in 60 s"}
            if msg != "ready":
                results.append(msg)
        go.set()
        for parent in pipes:
            if len(results) < len(pipes):
                results.append(parent.recv() if parent.poll(duration_s + 60)
                               else {"fatal": "no result from a load generator"})
    finally:
        for p in workers:
            p.join(10)
            if p.is_alive():
                p.kill()
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        return {"fatal": fatal}
    lat = np.concatenate([r["latencies"] for r in results]) * 1e3
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    elapsed = max(r["elapsed"] for r in results)
    pct = np.percentile(lat, [50, 90, 99, 99.9]) if len(lat) else [None] * 4
    return {"requests": int(len(lat)), "elapsed_s": round(elapsed, 4), "rps": round(len(lat) / elapsed, 2),
            "errors": errors, "client_cpu_s": round(sum(r["cpu_s"] for r in results), 3), "procs": n_procs,
            **{k: round(float(v), 4) for k, v in zip(("p50_ms", "p90_ms", "p99_ms", "p999_ms"), pct)}}


def _settled_total(url: str, name: str, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    last = promtext.total(promtext.scrape(url), name)
    while True:
        time.sleep(0.1)
        now = promtext.total(promtext.scrape(url), name)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def _measure(gw: Any, groups: list[procstat.Group], target: str, is_gw: bool, c: int, a: argparse.Namespace,
             tag: str) -> dict[str, Any]:
    """One run: the load, CPU per group, and for the gateway its own count of the requests."""
    g0 = _settled_total(f"{gw.url}/metrics", "infergate_requests_total") if is_gw else 0.0
    cpu0 = procstat.snapshot(groups)
    load0 = os.getloadavg()[0]
    res = run_load(target, is_gw, c, a.duration, a.procs, tag)
    cpu1 = procstat.snapshot(groups)
    if "fatal" in res:
        return {"problems": res["fatal"]}
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 3) for k in cpu1}
    cpu["client"] = res.pop("client_cpu_s")
    problems = [f"{n} calls failed with {k}" for k, n in res["errors"].items()]
    if is_gw:
        served = _settled_total(f"{gw.url}/metrics", "infergate_requests_total") - g0
        if served != res["requests"]:
            problems.append(f"gateway counted {served:g} requests, the client {res['requests']}")
    per_req = {k: round(v * 1e6 / res["requests"], 1) for k, v in cpu.items()} if res["requests"] else {}
    return {**res, "cpu_s": cpu, "cpu_us_per_request": per_req, "loadavg_1m": load0, "problems": problems,
            "errors": sum(res["errors"].values()), "error_codes": res["errors"], "avg_batch": None,
            "triton_avg_batch": None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grpc_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", default="1,64,256", help="concurrent calls per cell (comma-separated)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per cell")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--procs", type=int, default=2, help="load-generator processes (at most one per call)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--gateway-queue-delay-us", type=int, default=GATEWAY_US, metavar="US",
                   help="the model's queue delay while the gateway is measured (default %(default)s)")
    p.add_argument("--direct-queue-delay-us", type=int, default=DIRECT_US, metavar="US",
                   help="... while Triton's own gRPC port is (default %(default)s: the model repository's)")
    a = p.parse_args(argv)
    conns = [int(c) for c in a.connections.split(",")]
    if a.runs < 1 or a.duration < 1 or any(c < 1 for c in conns):
        p.error("--runs, --duration and connections must be at least 1")
    if a.gateway_queue_delay_us < 0 or a.direct_queue_delay_us < 0:
        p.error("queue delays must be >= 0 microseconds")

    from runtime.stack import GatewayProcess
    from runtime.triton import TritonRuntime, TritonServer, free_port

    started = time.monotonic()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw_dir = a.out / "raw" / stamp
    raw_dir.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()
    cells: list[dict[str, Any]] = []
    violations: list[str] = []
    tag = secrets.token_hex(4)
    repo = staged_repository(raw_dir / "model_repo", delay_us=a.direct_queue_delay_us)
    triton = TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo,
                          log_path=raw_dir / "triton.log").start()
    delay = QueueDelay(triton)
    delays = {"triton_grpc": a.direct_queue_delay_us, "gateway_grpc": a.gateway_queue_delay_us}
    try:
        # As the harness runs the gateway (bench/targets.py): inference calls over Triton's HTTP
        # port, and the fixed in-flight cap alone (adaptive admission sheds past the knee, which
        # is `make overload`'s subject, not this capacity matrix's).
        gw = GatewayProcess(triton.grpc_url, args=["--features", "off", "--triton-http-url", triton.http_url],
                            log_path=raw_dir / "gateway.log",
                            env={"INFERGATE_REDIS_KEY_PREFIX": f"bench-grpc-{tag}:", "INFERGATE_ADMISSION": "static"},
                            grpc_port=free_port()).start()
        try:
            tpid = triton.process.pid
            groups = [procstat.Group("gateway", (gw.process.pid,), descendants=True),
                      procstat.Group("triton", (tpid,)),
                      procstat.Group("triton_stubs", (tpid,), only_descendants=True)]
            targets = (("triton_grpc", triton.grpc_url, False), ("gateway_grpc", gw.grpc_url, True))
            for c in conns:
                # Interleaved (Triton run, gateway run, ...): on a shared machine the load drifts
                # within minutes, and each pair of runs sees about the same.
                print(f"[grpc-bench] c={c}: warm-up {a.warmup:g}s each, then {a.runs} x {a.duration:g}s per "
                      f"target, interleaved (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
                for name, target, is_gw in targets:
                    delay.set(delays[name])
                    run_load(target, is_gw, c, a.warmup, a.procs, f"{tag}w{c}")
                for i in range(a.runs):
                    for name, target, is_gw in targets:
                        if delay.set(delays[name]):   # reloaded: its first calls are not the steady state
                            run_load(target, is_gw, c, RELOAD_WARMUP_S, a.procs, f"{tag}rw{c}-{i}")
                        rec = _measure(gw, groups, target, is_gw, c, a, f"{tag}r{c}-{i}")
                        where = f"{name} c={c} run {i + 1}"
                        violations.extend(f"{where}: {x}" for x in rec.pop("problems"))
                        if rec.get("requests"):
                            runs[name].append(rec)
                for name, rs in runs.items():
                    if rs:
                        cell = stats.median_cell(name, c, rs)
                        cell["cpu_us_per_request"] = stats.cpu_per_request(rs)
                        cell["loadavg_1m"] = stats.median_of(r["loadavg_1m"] for r in rs)
                        cell["triton_queue_delay_us"] = delays[name]
                        cells.append(cell)
        finally:
            gw.stop()
    finally:
        triton.stop()

    ratios = {}
    for c in conns:
        g, d = stats.find_cell(cells, "gateway_grpc", c), stats.find_cell(cells, "triton_grpc", c)
        if g and d and d["rps"]:
            ratios[f"gateway_over_triton_grpc_rps_c{c}"] = round(g["rps"] / d["rps"], 4)
            ratios[f"gateway_added_p50_ms_c{c}"] = round(g["p50_ms"] - d["p50_ms"], 4)
            ratios[f"gateway_p99_over_triton_c{c}"] = round(g["p99_ms"] / d["p99_ms"], 4) if d["p99_ms"] else None
    machine["loadavg_end"] = list(os.getloadavg())
    doc = {"schema": 1, "created_utc": stamp,
           "command": " ".join(shlex.quote(x) for x in [sys.executable, "-m", "bench.grpc_bench",
                                                        *(sys.argv[1:] if argv is None else argv)]),
           "plan": {"connections": conns, "duration_s": a.duration, "warmup_s": a.warmup, "runs": a.runs,
                    "procs": a.procs, "streams_per_channel": STREAMS_PER_CHANNEL,
                    "direct_queue_delay_us": a.direct_queue_delay_us,
                    "gateway_queue_delay_us": a.gateway_queue_delay_us},
           "machine": machine, "wall_s": round(time.monotonic() - started, 1),
           "correctness": {"ok": not violations, "violations": violations},
           "ratios": ratios, "cells": cells}
    latest, dated = report.write_results(doc, a.out, stamp)
    plots = report.plot(cells, a.out) if not a.no_plots else []
    print(report.summary_table(cells))
    for cell in cells:
        print(f"{cell['target']:<14} c={cell['connections']:<4} CPU us/request {cell['cpu_us_per_request']}")
    print(f"ratios: {ratios}")
    print(f"wrote {latest} and {dated}" + (f"; plots {', '.join(x.name for x in plots)}" if plots else ""))
    if violations:
        print(f"[grpc-bench] FAILED: {len(violations)} violation(s):", file=sys.stderr)
        for v in violations:
            print(f"  - {v}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
