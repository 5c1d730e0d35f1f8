"""Synthetic-data sampling speed: in-process on one core, and through the gateway's Arrow route.

In-process: ``Sampler.sample(n, seed)`` (noise, numpy MLP, inverse transform, null masks) with
the process pinned to one CPU and BLAS limited to one thread; rows/s per repeat, median of 3.
HTTP: Triton + a gateway with ``--extension synthetic.routes:extension`` (BLAS limited to one
thread in the gateway), the demo version imported into a temp MLflow registry and published;
one client posts ``{"rows": B, "format": "arrow"}`` back to back until ``--http-rows`` rows have
come back (every body read in full, the first of each batch size decoded and checked); rows/s
per repeat, median of 3. Also: how late a 1 ms event-loop timer fires while a 100k-row sample is
made in a worker thread, as the gateway route does it. Writes bench/results/synthetic.json.

    .venv/bin/python bench/synthetic_bench.py [--export synthetic/demo] [--no-http]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "synthetic.json"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def in_process(export: Path, rows: list[int], repeat: int) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from synthetic.sampler import Sampler

    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    sampler = Sampler.load(export)
    out = []
    with threadpool_limits(1):
        sampler.sample(10_000, 0)  # warm-up: BLAS, page faults
        for n in rows:
            rates = []
            for rep in range(repeat):
                t0 = time.perf_counter()
                sampler.sample(n, rep)
                rates.append(n / (time.perf_counter() - t0))
            out.append({"rows": n, "rows_per_s": [round(r) for r in rates],
                        "median_rows_per_s": round(statistics.median(rates)), "cpu": cpu})
            print(f"in-process n={n}: median {statistics.median(rates):,.0f} rows/s", flush=True)
    return out


def loop_lag(export: Path, rows: int, repeat: int) -> dict:
    """Event-loop tick lag (1 ms sleeps) while ``rows`` are sampled + Arrow-encoded in a thread."""
    import asyncio

    from synthetic.encode import to_arrow
    from synthetic.sampler import Sampler

    sampler = Sampler.load(export)

    async def run() -> dict:
        lags: list[float] = []
        seconds = []

        async def ticker(stop: asyncio.Event) -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - t - 0.001)

        for rep in range(repeat):
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(stop))
            t0 = time.perf_counter()
            await asyncio.to_thread(lambda: to_arrow(sampler.columns, sampler.sample(rows, rep)))
            seconds.append(time.perf_counter() - t0)
            stop.set()
            await task
        lags.sort()
        return {"rows": rows, "sample_seconds": [round(x, 3) for x in seconds], "ticks": len(lags),
                "lag_ms_p50": round(lags[len(lags) // 2] * 1e3, 2), "lag_ms_p99": round(lags[int(len(lags) * 0.99)] * 1e3, 2),
                "lag_ms_max": round(lags[-1] * 1e3, 2)}

    out = asyncio.run(run())
    print(f"loop lag during {rows}-row samples in a thread: p50 {out['lag_ms_p50']} ms, p99 {out['lag_ms_p99']} ms, "
          f"max {out['lag_ms_max']} ms", flush=True)
    return out


def via_http(export: Path, batches: list[int], total: int, repeat: int) -> list[dict]:
    import httpx
    import pyarrow as pa

    from runtime.stack import Stack
    from synthetic.cli import main as synthetic_cli

    tmp = Path(tempfile.mkdtemp(prefix="synthetic-bench-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    if synthetic_cli(["--mlflow-uri", uri, "import", str(export), "--publish"]) != 0:
        raise SystemExit("the export could not be published (see above)")
    env = {**ONE_THREAD, "INFERGATE_MLFLOW_URI": uri, "INFERGATE_REDIS_KEY_PREFIX": f"synth-bench-{os.getpid()}:"}
    out = []
    with Stack(gateway_args=["--features", "off", "--extension", "synthetic.routes:extension"],
               gateway_env=env, log_dir=tmp) as stack, httpx.Client(timeout=60) as client:
        url = f"{stack.gateway.url}/v1/synthetic/user_features"
        for b in batches:
            first = client.post(url, json={"rows": b, "seed": 0, "format": "arrow"})
            first.raise_for_status()
            table = pa.ipc.open_stream(io.BytesIO(first.content)).read_all()
            assert table.num_rows == b and table.num_columns == 16, (table.num_rows, table.num_columns)
            rates, nbytes = [], len(first.content)
            for rep in range(repeat):
                got, seed = 0, 1000 * rep
                t0 = time.perf_counter()
                while got < total:
                    r = client.post(url, json={"rows": b, "seed": seed, "format": "arrow"})
                    if r.status_code != 200:
                        raise SystemExit(f"HTTP {r.status_code}: {r.text}")
                    got += b
                    seed += 1
                rates.append(got / (time.perf_counter() - t0))
            out.append({"batch_rows": b, "rows_per_s": [round(r) for r in rates],
                        "median_rows_per_s": round(statistics.median(rates)), "bytes_per_batch": nbytes,
                        "rows_per_repeat": total})
            print(f"http arrow batch={b}: median {statistics.median(rates):,.0f} rows/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, default=ROOT / "synthetic" / "demo")
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--http-batches", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--http-rows", type=int, default=300_000, help="rows fetched per repeat and batch size")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
           "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "export": str(args.export),
           "command": "python bench/synthetic_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if not args.no_http:  # first, while this process is not yet pinned to one CPU
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(1) as pool:
            doc["in_process"] = pool.apply(in_process, (args.export, args.rows, args.repeat))
        doc["loop_lag"] = loop_lag(args.export, max(args.rows), args.repeat)
        doc["http_arrow"] = via_http(args.export, args.http_batches, args.http_rows, args.repeat)
    else:
        doc["loop_lag"] = loop_lag(args.export, max(args.rows), args.repeat)
        doc["in_process"] = in_process(args.export, args.rows, args.repeat)
    doc["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
