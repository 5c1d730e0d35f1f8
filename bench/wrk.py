"""Running wrk with bench/infer.lua and parsing what its `done()` prints.

The parsing is pure (tested without servers); `run_wrk` is the only I/O here. wrk's own
CPU time comes from `os.wait4` (its rusage at exit), so it needs no polling.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

LUA_SCRIPT = Path(__file__).resolve().parent / "infer.lua"
MARKER = "BENCH_JSON "
MODES = ("triton", "triton_ab", "v1", "entity", "v2")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run as the Lua script summarised it (latencies in ms)."""

    duration_s: float
    requests: int          # responses wrk completed (its own count)
    sent: int              # request() calls: requests written or about to be
    responses: int         # response() calls seen by the Lua script
    non2xx: int
    socket_errors: dict[str, int]
    variants: dict[str, int]
    latency_ms: dict[str, float]
    cpu_s: float = 0.0     # wrk's user+system CPU seconds
    command: tuple[str, ...] = field(default=(), compare=False)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def unanswered(self) -> int:
        """Requests in flight when wrk stopped (abandoned, at most one per connection)."""
        return self.sent - self.responses

    def to_dict(self) -> dict:
        return {"rps": round(self.rps, 2), "duration_s": round(self.duration_s, 4),
                "requests": self.requests, "sent": self.sent, "responses": self.responses,
                "non2xx": self.non2xx, "socket_errors": self.socket_errors,
                "variants": self.variants, "latency_ms": self.latency_ms,
                "wrk_cpu_s": round(self.cpu_s, 4)}


def parse_output(text: str) -> WrkResult:
    """Find the script's `BENCH_JSON {...}` line in wrk's stdout."""
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            doc = json.loads(line[len(MARKER):])
            break
    else:
        raise WrkError(f"no {MARKER.strip()} line in wrk output:\n{text[-2000:]}")
    return WrkResult(
        duration_s=float(doc["duration_s"]), requests=int(doc["requests"]), sent=int(doc["sent"]),
        responses=int(doc["responses"]), non2xx=int(doc["non2xx"]),
        socket_errors={k: int(v) for k, v in doc["errors"].items()},
        variants={k: int(v) for k, v in doc["variants"].items()},
        latency_ms={k: float(v) for k, v in doc["latency_ms"].items()})


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_command(url: str, mode: str, connections: int, duration_s: float, *, threads: int = 1,
                tag: str = "r", entities: int = 10_000, cpus: str | None = None,
                timeout_s: float = 10.0) -> list[str]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    binary = wrk_binary()
    if binary is None:
        raise WrkError("wrk is not installed (make wrk)")
    # wrk refuses fewer connections than threads; at c=1 one thread is the only choice.
    threads = max(1, min(threads, connections))
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
           f"--timeout={timeout_s:g}s", "--latency", "-s", str(LUA_SCRIPT), url,
           "--", mode, tag, str(entities)]
    if cpus:
        cmd = [shutil.which("taskset") or "taskset", "-c", cpus, *cmd]
    return cmd


def run_wrk(cmd: Sequence[str], timeout_s: float) -> WrkResult:
    """Run one wrk command; raise WrkError on a non-zero exit or a missing summary.

    wrk's CPU seconds are the RUSAGE_CHILDREN delta around the run: nothing else is reaped
    by this process while a cell runs (the servers are reaped only when they stop).
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise WrkError(f"wrk did not finish within {timeout_s:.0f}s: {' '.join(cmd)}") from None
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {err.strip()[-1000:]}")
    res = parse_output(out)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return replace(res, cpu_s=cpu, command=tuple(cmd))
