"""A small closed-loop HTTP/1.1 load generator that accounts for every request it sends.

Raw asyncio streams rather than httpx: on a shared 2-core machine the client must cost far
less CPU than the gateway it loads, and it must see exactly what came back on the wire
(one response per request, no stray bytes, no silent retries).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import orjson

NO_RESPONSE = 0   # the connection failed or stalled before a whole response arrived


@dataclass(slots=True)
class Outcome:
    t_start: float            # seconds since the run began
    elapsed: float            # seconds from write to the last byte of the body
    status: int               # NO_RESPONSE when none came
    error: str | None         # the JSON error code, or the client-side failure
    retry_after: bytes | None
    json_error: bool          # a non-200 answered with a JSON {"error", "message"} body
    extra_bytes: bool = False  # bytes after the response: a second answer to one request

    @property
    def t_end(self) -> float:
        return self.t_start + self.elapsed


def http_request(path: str, body: bytes, headers: dict[str, str] | None = None,
                 method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json",
            f"content-length: {len(body)}"]
    head.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
               t0_run: float, give_up_s: float) -> tuple[Outcome, bool]:
    """Send one request and read one response; returns (outcome, connection reusable)."""
    t0 = time.perf_counter()
    start = t0 - t0_run
    try:
        writer.write(request)
        async with asyncio.timeout(give_up_s):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            hdrs = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(hdrs.get("content-length", "0")))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError,
            TimeoutError, ValueError, IndexError) as exc:
        return Outcome(start, time.perf_counter() - t0, NO_RESPONSE, type(exc).__name__, None, False), False
    elapsed = time.perf_counter() - t0
    code, json_error = None, False
    if status != 200:
        try:
            doc = orjson.loads(body)
            code = doc.get("error") if isinstance(doc, dict) else None
            json_error = (isinstance(code, str) and isinstance(doc.get("message"), str)
                          and hdrs.get("content-type", "").startswith("application/json"))
        except orjson.JSONDecodeError:
            code = "not_json"
    ra = hdrs.get("retry-after")
    extra = len(reader._buffer) > 0  # type: ignore[attr-defined]  # stray bytes = two answers
    return (Outcome(start, elapsed, status, code, ra.encode() if ra else None, json_error, extra),
            hdrs.get("connection", "").lower() != "close")


@dataclass
class LoadRun:
    """Results of one run; `outcomes` in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)
    connect_failures: int = 0

    def counts(self) -> dict[str, int]:
        c = Counter(str(o.status) if o.status != 200 else "200" for o in self.outcomes)
        return dict(sorted(c.items()))

    def errors(self) -> dict[str, int]:
        c = Counter(f"{o.status}:{o.error}" for o in self.outcomes if o.status != 200)
        return dict(sorted(c.items()))


async def run_load(host: str, port: int, make_request: Callable[[int], bytes], *, concurrency: int,
                   give_up_s: float, duration_s: float | None = None,
                   stop: Callable[[], bool] | None = None, t0: float | None = None,
                   max_requests: int = 50_000, think_s: float = 0.0,
                   backoff: Callable[[Outcome], float] | None = None) -> LoadRun:
    """`concurrency` keep-alive connections, each sending its next request when the last was
    answered, for `duration_s` or until `stop()`. Times are on a clock starting at `t0`
    (perf_counter; default now). A request not answered within `give_up_s` counts as lost.
    `backoff(outcome)` is how long a connection waits before its next request (e.g. honouring
    Retry-After); `think_s` is added after every request."""
    run = LoadRun()
    t0_run = time.perf_counter() if t0 is None else t0
    stop_at = t0_run + duration_s if duration_s is not None else float("inf")
    seq = iter(range(max_requests))

    def more() -> bool:
        return time.perf_counter() < stop_at and not (stop is not None and stop())

    async def worker() -> None:
        reader = writer = None
        while more():
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                except (OSError, asyncio.TimeoutError):
                    run.connect_failures += 1
                    await asyncio.sleep(0.05)
                    continue
            i = next(seq, None)
            if i is None:
                break
            assert reader is not None
            out, reusable = await _one(reader, writer, make_request(i), t0_run, give_up_s)
            run.outcomes.append(out)
            if not reusable or out.status == NO_RESPONSE:
                writer.close()
                reader = writer = None
            pause = think_s + (backoff(out) if backoff is not None else 0.0)
            if pause > 0:
                await asyncio.sleep(pause)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summarize(run: LoadRun, *, deadline_s: float, t_on: float | None = None,
              t_off: float | None = None) -> dict:
    """Outcome counts and latencies, overall and for the windows before/during/after a fault."""
    lat = [o.elapsed for o in run.outcomes if o.status != NO_RESPONSE]
    out = {
        "requests": len(run.outcomes),
        "by_status": run.counts(),
        "by_error": run.errors(),
        "lost": sum(o.status == NO_RESPONSE for o in run.outcomes),
        "extra_responses": sum(o.extra_bytes for o in run.outcomes),
        "connect_failures": run.connect_failures,
        "p50_ms": round(percentile(lat, 50) * 1e3, 2),
        "p99_ms": round(percentile(lat, 99) * 1e3, 2),
        "max_ms": round(max(lat, default=0.0) * 1e3, 2),
        "deadline_ms": round(deadline_s * 1e3),
    }
    if t_on is not None and t_off is not None:
        during = [o for o in run.outcomes if t_on <= o.t_start < t_off]
        out["fault_s"] = round(t_off - t_on, 2)
        out["during_fault"] = dict(sorted(Counter(str(o.status) for o in during).items()))
        out["recovery_s"] = recovery_s(run, t_off)
    return out


def recovery_s(run: LoadRun, t_off: float) -> float | None:
    """Seconds from lifting the fault to the end of the first 200 sent after it."""
    ends = [o.t_end for o in run.outcomes if o.status == 200 and o.t_start >= t_off]
    return round(min(ends) - t_off, 3) if ends else None


def contract_violations(run: LoadRun, *, deadline_s: float, slack_s: float,
                        allowed: frozenset[int] = frozenset({200, 429, 503})) -> list[str]:
    """Everything that breaks the gateway's promise under faults; empty when it held."""
    bad: list[str] = []
    for o in run.outcomes:
        where = f"request started at {o.t_start:.3f}s"
        if o.status == NO_RESPONSE:
            bad.append(f"{where}: no response ({o.error}) after {o.elapsed * 1e3:.0f} ms")
            continue
        if o.extra_bytes:
            bad.append(f"{where}: more than one response")
        if o.status not in allowed:
            bad.append(f"{where}: status {o.status} ({o.error})")
        if o.status != 200 and not o.json_error:
            bad.append(f"{where}: {o.status} without a JSON error body")
        if o.status in (429, 503) and not o.retry_after:
            bad.append(f"{where}: {o.status} without Retry-After")
        if o.elapsed > deadline_s + slack_s:
            bad.append(f"{where}: {o.status} took {o.elapsed * 1e3:.0f} ms > deadline "
                       f"{deadline_s * 1e3:.0f} + {slack_s * 1e3:.0f} ms")
    return bad
