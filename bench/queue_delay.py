"""Triton's dynamic-batching queue delay, set per target in a benchmark.

Triton holds a call that arrives alone in its model's queue up to `max_queue_delay_microseconds`
for other calls to batch it with. Clients that send single rows need that: it is how Triton-direct
forms its batches (the demo model's 100 µs, `runtime/modelgen.py`). Behind the gateway it is
latency only: the gateway sends one call in flight per target, already a batch, so every call
waits the whole delay for company that cannot come. A gateway deployment sets it to 0; the
benchmarks measure each side at its own best setting: Triton-direct at the repository's
delay, the gateway's targets at `GATEWAY_US` (`python -m bench.harness --gateway-queue-delay-us`).

The model is reloaded from a copy of the repository with the delay rewritten (Triton reads
its `config.pbtxt` again on `load`), so the committed repository is never touched.

`python -m bench.queue_delay [--delays 0,100] [--connections 16,64,256] [--rounds 5]` is the
A/B behind that choice: one Triton, one `gateway_full` gateway for the whole run, and per round
and concurrency each delay in turn (a reload, a 1 s warm-up, a measured wrk run; the order
alternates between rounds against drift), then Triton-direct at its own delay as the yardstick.
Medians of the rounds; every run in bench/results/queue_delay/queue_delay.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runtime.modelgen import QUEUE_DELAY_US
from runtime.triton import DEFAULT_REPOSITORY, TritonServer

__all__ = ["DIRECT_US", "GATEWAY_US", "QueueDelay", "staged_repository"]

OUT = Path(__file__).resolve().parent / "results" / "queue_delay"

DIRECT_US = QUEUE_DELAY_US   # Triton-direct: the model's own setting
GATEWAY_US = 0               # behind the gateway's batching (BENCHMARKS.md: +15 % at c=16)
# Load after a reload (`QueueDelay.set` returned True, ~1.5 s) before a measured run: the
# reloaded model's first calls are not its steady state (bench.harness --interleave, bench.grpc_bench).
RELOAD_WARMUP_S = 1.0

_DELAY = re.compile(rb"max_queue_delay_microseconds: *(\d+)")


def staged_repository(dest: Path, models: tuple[str, ...] = ("clf",), delay_us: int | None = None,
                      source: Path = DEFAULT_REPOSITORY) -> Path:
    """Copy `models` of `source` into `dest` (made if missing); with `delay_us`, their queue
    delay rewritten to it. Returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for m in models:
        shutil.copytree(source / m, dest / m, dirs_exist_ok=True)
        if delay_us is not None:
            _rewrite(dest / m / "config.pbtxt", delay_us)
    return dest


def _read(config: Path) -> tuple[bytes, int]:
    """(the text of `config`, its one `max_queue_delay_microseconds`); refuses none or several."""
    text = config.read_bytes()
    found = _DELAY.findall(text)
    if len(found) != 1:
        raise ValueError(f"{config}: expected one max_queue_delay_microseconds, found {len(found)}")
    return text, int(found[0])


def _rewrite(config: Path, delay_us: int) -> int:
    """Set the one `max_queue_delay_microseconds` of `config`; returns the value it had."""
    if delay_us < 0:
        raise ValueError(f"queue delay must be >= 0 µs, got {delay_us}")
    text, had = _read(config)
    config.write_bytes(_DELAY.sub(b"max_queue_delay_microseconds: %d" % delay_us, text))
    return had


class QueueDelay:
    """The queue delay of one model of a running Triton whose repository is a staged copy."""

    def __init__(self, triton: TritonServer, model: str = "clf") -> None:
        if Path(triton.repository).resolve() == DEFAULT_REPOSITORY.resolve():
            raise ValueError("QueueDelay rewrites the repository: give Triton a staged copy")
        self._triton, self._model = triton, model
        self._config = Path(triton.repository) / model / "config.pbtxt"
        self.current_us = _read(self._config)[1]

    def __repr__(self) -> str:
        return f"<QueueDelay {self._model} {self.current_us} µs>"

    def set(self, delay_us: int) -> bool:
        """Make `delay_us` the model's queue delay (a reload when it changes); True if it did."""
        if delay_us == self.current_us:
            return False
        _rewrite(self._config, delay_us)
        self._triton.load(self._model)   # blocks until every version is loaded again
        self.current_us = delay_us
        return True


def _measure(url: str, mode: str, c: int, duration: float, gw_url: str | None, pid: int | None) -> dict:
    """One warm-up and one measured wrk run; for the gateway also its CPU per request, its mean
    Triton call (the `inference` stage: the delay shows there first) and rows per call."""
    from bench import procstat, promtext
    from bench.wrk import run_wrk, wrk_command

    run_wrk(wrk_command(url, mode, c, 1.0), timeout_s=40)          # warm-up
    before = promtext.scrape(f"{gw_url}/metrics") if gw_url else None
    cpu0 = procstat.snapshot([procstat.Group("gw", (pid,))])["gw"] if pid else 0.0
    r = run_wrk(wrk_command(url, mode, c, duration), timeout_s=duration + 40)
    cpu1 = procstat.snapshot([procstat.Group("gw", (pid,))])["gw"] if pid else 0.0
    out = {"rps": round(r.rps), "p50_ms": r.latency_ms.get("p50"), "p99_ms": r.latency_ms.get("p99"),
           "non2xx": r.non2xx}
    if gw_url and pid and before is not None:
        after = promtext.scrape(f"{gw_url}/metrics")
        out["gateway_us_per_req"] = round((cpu1 - cpu0) / max(r.requests, 1) * 1e6, 1)
        call = promtext.avg_batch(before, after, "infergate_stage_duration_seconds_sum",
                                  "infergate_stage_duration_seconds_count", stage="inference")
        out["call_ms"] = None if call is None else round(call * 1e3, 3)
        rows = promtext.avg_batch(before, after, "infergate_batch_rows_sum", "infergate_batch_rows_count")
        out["rows_per_call"] = None if rows is None else round(rows, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.targets import TRITON_PATH, drop_keys, prepare_features, probe, start_gateway, target_specs
    from runtime.triton import TritonRuntime

    p = argparse.ArgumentParser(prog="python -m bench.queue_delay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delays", default=f"{GATEWAY_US},{DIRECT_US}", help="µs, comma-separated")
    p.add_argument("--connections", default="16,64,256")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    delays = [int(x) for x in a.delays.split(",")]
    conns = [int(x) for x in a.connections.split(",")]
    if a.rounds < 1 or any(d < 0 for d in delays) or not conns:
        p.error("--rounds >= 1, delays >= 0, at least one concurrency")
    raw = Path(tempfile.mkdtemp(prefix="queue-delay-"))
    features = prepare_features(raw / "feature-repo", a.redis_url, raw / "features.log")
    if features.mode != "redis":
        print(f"features unusable: {features.note}", file=sys.stderr)
        return 2
    spec = target_specs(["gateway_full"], features, ("--redis-url", a.redis_url))[0]
    runs: list[dict] = []
    repo = staged_repository(raw / "model_repo")
    with TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo, log_path=raw / "triton.log") as triton:
        delay = QueueDelay(triton)
        gw = start_gateway(spec, triton.grpc_url, raw / "gateway.log", "queue-delay", triton.http_url)
        try:
            reason = probe(gw.url, spec.mode)
            if reason:
                raise RuntimeError(f"the gateway's probe request failed: {reason}")
            direct = f"http://{triton.http_url}{TRITON_PATH}"
            for rnd in range(a.rounds):
                order = delays if rnd % 2 == 0 else delays[::-1]
                for c in conns:
                    for d in order:
                        delay.set(d)
                        m = _measure(f"{gw.url}/v1/infer", spec.mode, c, a.duration, gw.url,
                                     gw.process.pid if gw.process else None)
                        runs.append({"round": rnd, "target": "gateway_full", "delay_us": d, "c": c, **m})
                        print(json.dumps(runs[-1]), flush=True)
                    delay.set(DIRECT_US)
                    m = _measure(direct, "triton", c, a.duration, None, None)
                    runs.append({"round": rnd, "target": "triton_direct", "delay_us": DIRECT_US, "c": c, **m})
                    print(json.dumps(runs[-1]), flush=True)
        finally:
            gw.stop()
            drop_keys(gw)
    medians = []
    for c in conns:
        direct_rps = statistics.median(r["rps"] for r in runs if r["target"] == "triton_direct" and r["c"] == c)
        for d in delays:
            mine = [r for r in runs if r["target"] == "gateway_full" and r["c"] == c and r["delay_us"] == d]
            medians.append({"c": c, "delay_us": d, "rps": statistics.median(r["rps"] for r in mine),
                            "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                            "gateway_us_per_req": statistics.median(r["gateway_us_per_req"] for r in mine),
                            "call_ms": statistics.median(r["call_ms"] for r in mine if r.get("call_ms") is not None),
                            "over_direct": round(statistics.median(r["rps"] for r in mine) / direct_rps, 3),
                            "direct_rps": direct_rps})
    for m in medians:
        print(json.dumps(m))
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "queue_delay.json"
    path.write_text(json.dumps({"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "command": " ".join(["python -m bench.queue_delay", *(sys.argv[1:] if argv is None else argv)]),
                                "medians": medians, "runs": runs}, indent=1))
    print(f"wrote {path}")
    return 0 if all(r["non2xx"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
