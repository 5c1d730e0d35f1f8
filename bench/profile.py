"""`python -m bench.profile`: where the gateway's CPU goes under load (py-spy + wrk).

    python -m bench.profile [--target gateway_full] [--connections 64] [--duration 10] [--svg]

Starts Triton and one gateway configuration, loads it with wrk at c=64, samples the gateway
(and its workers) with `py-spy record --format raw` (collapsed stacks, idle time excluded)
and writes bench/results/profile.txt: the CPU of each of the gateway's threads over the
window (user and system µs per request, from /proc), top functions by self and by inclusive
samples, and the share per layer (uvicorn, event loop, gRPC, the gateway's own code, ...). The collapsed
stacks are kept in profile.folded (speedscope and flamegraph.pl read them); --svg also
records a flame graph (a second, separate sampling run).
py-spy: `pip install py-spy`; it needs ptrace rights over the gateway (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

from bench.harness import DEFAULT_OUT
from bench.procstat import thread_times
from bench.queue_delay import GATEWAY_US, staged_repository
from bench.targets import ALL_TARGETS, FeatureSetup, drop_keys, prepare_features, probe, start_gateway, target_specs
from bench.wrk import parse_output, wrk_binary, wrk_command
from runtime.triton import TritonRuntime, TritonServer

# Layer of a frame, by the first matching path fragment; the order matters (gateway before site-packages).
LAYERS = (
    ("gateway", ("gateway/",)), ("router", ("router/",)), ("features", ("features/",)),
    ("grpc", ("grpc/", "grpc_", "tritonclient/")), ("redis", ("redis/",)),
    ("uvicorn/httptools", ("uvicorn/", "httptools/", "h11/")), ("starlette", ("starlette/",)),
    ("event loop", ("asyncio/", "uvloop/")), ("numpy", ("numpy/",)), ("orjson", ("orjson",)),
    ("prometheus", ("prometheus_client/",)),
)


def parse_folded(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (`frame;frame;frame COUNT`) -> {stack: samples}."""
    out: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out[tuple(stack.split(";"))] += int(count)
    return out


def function_of(frame: str) -> str:
    """`handle (gateway/asgi.py:88)` -> `handle (gateway/asgi.py)`: lines merged per function."""
    name, sep, loc = frame.partition(" (")
    if not sep:
        return frame
    return f"{name} ({loc.rstrip(')').rsplit(':', 1)[0]})"


def layer_of(frame: str) -> str:
    for layer, fragments in LAYERS:
        if any(f in frame for f in fragments):
            return layer
    return "other"


def _is_code(frame: str) -> bool:
    # py-spy's first frames name the process and thread, not code.
    return " (" in frame and not frame.startswith(("process ", "thread "))


def summarise(stacks: Counter[tuple[str, ...]], top: int = 25) -> str:
    total = sum(stacks.values())
    if not total:
        return "no samples (was the gateway busy? does py-spy have ptrace rights?)\n"
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for stack, n in stacks.items():
        code = [f for f in stack if _is_code(f)]
        if not code:
            continue
        self_t[function_of(code[-1])] += n
        layers[layer_of(code[-1])] += n
        for fn in {function_of(f) for f in code}:
            incl[fn] += n
    pct = lambda n: f"{100.0 * n / total:6.2f}%"  # noqa: E731
    lines = [f"samples: {total} (idle excluded)", "", "share of samples by layer (self time):"]
    lines += [f"  {pct(n)}  {name}" for name, n in layers.most_common()]
    lines += ["", f"top {top} functions by self samples:"]
    lines += [f"  {pct(n)}  {fn}" for fn, n in self_t.most_common(top)]
    lines += ["", f"top {top} functions by inclusive samples:"]
    lines += [f"  {pct(n)}  {fn}" for fn, n in incl.most_common(top)]
    return "\n".join(lines) + "\n"


def thread_table(pid: int, before: dict[int, tuple[str, float, float]],
                 after: dict[int, tuple[str, float, float]], requests: int, min_share: float = 0.01) -> str:
    """CPU by thread over a window: user and system µs per request, busiest first; threads
    below `min_share` of the process's CPU are summed in one line. The main thread (tid ==
    pid) runs the event loop, the HTTP front and all the gateway's Python; gRPC's threads (the
    Triton client's metadata calls, the gRPC front) show up beside it."""
    rows = []
    for tid, (name, u1, s1) in after.items():
        _, u0, s0 = before.get(tid, (name, 0.0, 0.0))
        rows.append((tid, name, u1 - u0, s1 - s0))
    total = sum(u + s for _, _, u, s in rows)
    if requests <= 0 or total <= 0:
        return "CPU by thread: no requests or no CPU in the window\n"
    per = lambda x: 1e6 * x / requests  # noqa: E731
    lines = [f"CPU by thread during sampling ({requests} requests; µs per request, user + system):"]
    rest = [0.0, 0.0, 0]
    for tid, name, u, s in sorted(rows, key=lambda r: -(r[2] + r[3])):
        if (u + s) < min_share * total:
            rest[0] += u
            rest[1] += s
            rest[2] += 1
            continue
        label = f"{name} {tid}" + (" (main: event loop)" if tid == pid else "")
        lines.append(f"  {per(u + s):7.1f}  = {per(u):6.1f} user + {per(s):6.1f} sys   {label}")
    if rest[2]:
        lines.append(f"  {per(rest[0] + rest[1]):7.1f}  = {per(rest[0]):6.1f} user + {per(rest[1]):6.1f} sys   "
                     f"{rest[2]} other threads")
    su, ss = sum(r[2] for r in rows), sum(r[3] for r in rows)
    lines.append(f"  {per(su + ss):7.1f}  = {per(su):6.1f} user + {per(ss):6.1f} sys   the whole process")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="gateway_full", choices=[t for t in ALL_TARGETS if t != "triton_direct"])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=10, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--svg", action="store_true", help="also record a flame graph (profile.svg)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists() or wrk_binary() is None:
        print("needs py-spy (pip install py-spy) and wrk (make wrk)", file=sys.stderr)
        return 2
    raw_dir = a.out / "raw" / "profile"
    raw_dir.mkdir(parents=True, exist_ok=True)
    features = FeatureSetup("off", note="not needed")
    if a.target != "gateway_nofeatures":
        features = prepare_features(raw_dir / "feature-repo", a.redis_url, raw_dir / "features.log")
    spec = target_specs([a.target], features, ("--redis-url", a.redis_url))[0]
    # The model at the gateway's queue delay, as the harness measures the gateway (bench/queue_delay.py).
    repo = staged_repository(raw_dir / "model_repo", delay_us=GATEWAY_US)
    with TritonServer(TritonRuntime.ensure(), models=["clf"], repository=repo, log_path=raw_dir / "triton.log") as triton:
        gw = start_gateway(spec, triton.grpc_url, raw_dir / "gateway.log", "profile", triton.http_url)
        try:
            reason = probe(gw.url, spec.mode)
            if reason:
                print(f"{spec.name} does not serve: {reason}", file=sys.stderr)
                return 1
            url = f"{gw.url}/v1/infer"
            subprocess.run(wrk_command(url, spec.mode, a.connections, 2), capture_output=True)  # warm-up
            sessions = [("raw", raw_dir / "profile.folded")] + ([("flamegraph", a.out / "profile.svg")] if a.svg else [])
            reports = []
            by_thread: tuple = ()
            for fmt, path in sessions:
                load = subprocess.Popen(wrk_command(url, spec.mode, a.connections, a.duration + 3, tag=fmt),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(1.0)
                t_before = thread_times(gw.process.pid) if fmt == "raw" else None
                w0 = time.monotonic()
                spy = subprocess.run([pyspy, "record", "--pid", str(gw.process.pid), "--subprocesses",
                                      "--nonblocking", "--rate", str(a.rate), "--duration", str(a.duration),
                                      "--format", fmt, "-o", str(path)], capture_output=True, text=True)
                if t_before is not None:
                    by_thread = (gw.process.pid, t_before, thread_times(gw.process.pid), time.monotonic() - w0)
                out, _ = load.communicate(timeout=a.duration + 60)
                if spy.returncode != 0:
                    print(f"py-spy failed: {spy.stderr.strip()[-1000:]}", file=sys.stderr)
                    return 1
                reports.append(parse_output(out))
        finally:
            gw.stop()
            drop_keys(gw)
    res = reports[0]
    header = (f"gateway profile: target {spec.name} (features {spec.features}{'; ' + spec.note if spec.note else ''}), "
              f"wrk c={a.connections}, {a.duration}s at {a.rate} Hz\n"
              f"load during sampling: {res.rps:.0f} req/s, p50 {res.latency_ms['p50']:.2f} ms, "
              f"p99 {res.latency_ms['p99']:.2f} ms, non-2xx {res.non2xx}\n"
              f"collapsed stacks: {raw_dir / 'profile.folded'}\n\n")
    pid, t0, t1, window_s = by_thread   # requests in the window: wrk's rate over it
    text = (header + thread_table(pid, t0, t1, round(res.rps * window_s)) + "\n"
            + summarise(parse_folded((raw_dir / "profile.folded").read_text().splitlines())))
    (a.out / "profile.txt").write_text(text)
    print(text)
    print(f"wrote {a.out / 'profile.txt'}" + (f" and {a.out / 'profile.svg'}" if a.svg else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
