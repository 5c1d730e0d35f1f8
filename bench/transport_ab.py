"""`python -m bench.transport_ab`: the full path with inference calls over Triton's gRPC port vs
its HTTP port (`--triton-http-url`), interleaved, medians of `--rounds`; or any other variants
of the gateway's settings (`--variant NAME:TRANSPORT[:ENV=VALUE,...]`, e.g.
`--variant base:http --variant lean:http:INFERGATE_GC_THRESHOLD=0`).

    python -m bench.transport_ab [--connections 1,64,256] [--rounds 3] [--duration 10] [--variant ...]

One Triton; per round, per concurrency, a fresh gateway (features from Redis, as
`gateway_full`) with each variant in turn, a 2 s wrk warm-up and a measured run. Per run:
req/s, p50/p99, the gateway's mean Triton-call time (its `inference` stage), and CPU per
request from /proc of the gateway (its Python thread and the whole process) and of
tritonserver. The model runs at the gateway's queue delay (`--queue-delay-us`, default 0: both
variants batch; `bench/queue_delay.py`; its figures in BENCHMARKS.md until 2026-12-07 were taken
at the model's 100 µs). Writes bench/results/transport/transport.json and prints the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import procstat, promtext
from bench.queue_delay import GATEWAY_US, staged_repository
from bench.targets import drop_keys, prepare_features, probe, start_gateway, target_specs
from bench.wrk import parse_output, wrk_command
from runtime.triton import TritonRuntime, TritonServer

OUT = Path(__file__).resolve().parent / "results" / "transport"
_INFERENCE = "infergate_stage_duration_seconds"


def _cpu(pid: int, tpid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the gateway's Python (main) thread, the gateway, tritonserver."""
    groups = procstat.snapshot([procstat.Group("gateway", (pid,)), procstat.Group("triton", (tpid,))])
    return procstat.thread_seconds(pid, pid) or 0.0, groups["gateway"], groups["triton"]


def _inference_mean_ms(url: str) -> float | None:
    """The mean Triton call as the gateway timed it (its `inference` stage), since it started."""
    samples = promtext.scrape(f"{url}/metrics")
    n = promtext.total(samples, f"{_INFERENCE}_count", stage="inference")
    return round(promtext.total(samples, f"{_INFERENCE}_sum", stage="inference") / n * 1e3, 3) if n else None


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """NAME:TRANSPORT[:ENV=VALUE,...] -> (name, transport, env)."""
    name, _, rest = text.partition(":")
    transport, _, envs = rest.partition(":")
    if not name or transport not in ("grpc", "http"):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:grpc|http[:ENV=VALUE,...]")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return name, transport, env


def one_run(triton: TritonServer, spec, variant: tuple[str, str, dict[str, str]], c: int, duration: float,  # type: ignore[no-untyped-def]
            raw: Path) -> dict:
    name, transport, env = variant
    gw = start_gateway(spec, triton.grpc_url, raw / f"gateway-{name}-{c}.log", "ab",
                       triton.http_url if transport == "http" else None, env)
    try:
        reason = probe(gw.url, spec.mode)
        if reason:
            raise RuntimeError(f"{name}: {reason}")
        url = f"{gw.url}/v1/infer"
        subprocess.run(wrk_command(url, spec.mode, c, 2), capture_output=True, check=True)
        pid, tpid = gw.process.pid, triton.process.pid
        before = _cpu(pid, tpid)
        r = subprocess.run(wrk_command(url, spec.mode, c, duration), capture_output=True, text=True, check=True)
        after = _cpu(pid, tpid)
        res = parse_output(r.stdout)
        n = res.rps * duration
        per_req = [round((b - a) / n * 1e6, 1) for a, b in zip(before, after)]
        return {"variant": name, "transport": transport, "c": c, "rps": round(res.rps), "p50_ms": res.latency_ms["p50"],
                "p99_ms": res.latency_ms["p99"], "non2xx": res.non2xx, "inference_mean_ms": _inference_mean_ms(gw.url),
                "gateway_thread_us_per_req": per_req[0], "gateway_us_per_req": per_req[1],
                "tritonserver_us_per_req": per_req[2]}
    finally:
        gw.stop()
        drop_keys(gw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transport_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", default="1,64,256")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--variant", type=parse_variant, action="append", dest="variants",
                   help="NAME:grpc|http[:ENV=VALUE,...] (repeat; default: grpc:grpc and http:http)")
    p.add_argument("--queue-delay-us", type=int, default=GATEWAY_US, metavar="US",
                   help="the model's dynamic-batching queue delay (default %(default)s, the gateway's)")
    a = p.parse_args(argv)
    if a.queue_delay_us < 0:
        p.error("--queue-delay-us must be >= 0")
    variants = a.variants or [("grpc", "grpc", {}), ("http", "http", {})]
    conns = [int(x) for x in a.connections.split(",")]
    raw = Path(tempfile.mkdtemp(prefix="transport-ab-"))
    features = prepare_features(raw / "feature-repo", a.redis_url, raw / "features.log")
    spec = target_specs(["gateway_full"], features, ("--redis-url", a.redis_url))[0]
    runs = []
    repo = staged_repository(raw / "model_repo", delay_us=a.queue_delay_us)
    with TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo, log_path=raw / "triton.log") as triton:
        for rnd in range(a.rounds):
            for c in conns:
                for variant in variants:
                    r = one_run(triton, spec, variant, c, a.duration, raw)
                    r["round"] = rnd
                    runs.append(r)
                    print(json.dumps(r), file=sys.stderr)
    keys = ("rps", "p50_ms", "p99_ms", "inference_mean_ms", "gateway_thread_us_per_req", "gateway_us_per_req",
            "tritonserver_us_per_req")
    medians = []
    for c in conns:
        for name, transport, _ in variants:
            cell = [r for r in runs if r["c"] == c and r["variant"] == name]
            medians.append({"variant": name, "transport": transport, "c": c,
                            **{k: statistics.median(r[k] for r in cell if r[k] is not None) for k in keys}})
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "triton_queue_delay_us": a.queue_delay_us, "medians": medians, "runs": runs}
    out = a.out / ("transport.json" if a.variants is None else "variants.json")
    out.write_text(json.dumps(doc, indent=1))
    for m in medians:
        print(" ".join(f"{k}={v}" for k, v in m.items()))
    print(f"wrote {out}")
    return 0 if all(r["non2xx"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
