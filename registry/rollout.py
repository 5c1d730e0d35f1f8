"""A guarded rollout: deploy at the plan's first weight, hold each step, promote or roll back.

During each hold the experiment's guardrail state is read from the gateway (the gateway
evaluates guardrails itself and may already have rolled back); `breached` or `rolled_back`
ends the rollout with a rollback (exit 3). One rollout per experiment at a time: a Redis
lock (`SET NX PX` through redis-py's `Lock`, renewed every sample) under the gateway's key
prefix refuses a second one.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from registry.errors import BadInput, LifecycleError, RolloutRefused
from registry.lifecycle import TRITON_VERSION_TAG, Lifecycle
from registry.store import VersionRef

BAD_STATES = ("breached", "rolled_back")
PROMOTED, ROLLED_BACK = 0, 3


def parse_plan(raw: str) -> list[float]:
    try:
        plan = [float(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--plan: comma-separated percents such as 10,50,100, got {raw!r}") from None
    if not plan or any(not 0 < w <= 100 for w in plan) or plan != sorted(plan) or plan[-1] != 100:
        raise BadInput(f"--plan: rising percents in (0, 100] ending at 100, got {raw!r}")
    return plan


@dataclass
class VariantSample:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)   # le -> cumulative count


def sample_metrics(text: str, model: str) -> dict[str, VariantSample]:
    """Per-variant counters of the gateway's /metrics (summed over every series)."""
    out: dict[str, VariantSample] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("model") != model or "variant" not in s.labels:
                continue
            v = out.setdefault(s.labels["variant"], VariantSample())
            if s.name == "infergate_requests_total":
                v.requests += s.value
            elif s.name == "infergate_errors_total":
                v.errors += s.value
            elif s.name == "infergate_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                v.buckets[le] = v.buckets.get(le, 0.0) + s.value
    return out


def step_figures(a: dict[str, VariantSample], b: dict[str, VariantSample], seconds: float) -> dict[str, dict]:
    """req/s, errors and p99 (histogram bucket bound, ms) per variant between two samples."""
    rows = {}
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name, VariantSample()), b.get(name, VariantSample())
        n = y.requests - x.requests
        p99 = None
        if n > 0:
            total = y.buckets.get(float("inf"), 0) - x.buckets.get(float("inf"), 0)
            for le in sorted(y.buckets):
                if y.buckets[le] - x.buckets.get(le, 0.0) >= 0.99 * total:
                    p99 = le * 1e3
                    break
        rows[name] = {"requests": int(n), "rps": round(n / seconds, 1) if seconds > 0 else 0.0,
                      "errors": int(y.errors - x.errors), "p99_ms": p99}
    return rows


class RolloutLock:
    """At most one rollout per experiment, across machines (Redis, with a TTL)."""

    def __init__(self, experiment: str, redis_url: str | None = None, prefix: str | None = None,
                 ttl_s: float = 30.0) -> None:
        import redis
        self.url = redis_url or os.environ.get("INFERGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.prefix = prefix if prefix is not None else os.environ.get("INFERGATE_REDIS_KEY_PREFIX", "infergate:")
        self.key = f"{self.prefix}registry:rollout:{experiment}"
        self._redis = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._lock = self._redis.lock(self.key, timeout=ttl_s, blocking=False,
                                      thread_local=False)
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"<RolloutLock {self.key}>"

    def __enter__(self) -> "RolloutLock":
        import redis
        token = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        try:
            got = self._lock.acquire(token=token.encode())
        except redis.RedisError as exc:
            raise LifecycleError(f"rollout lock: Redis at {self.url} failed: {exc}") from None
        if not got:
            holder = self._redis.get(self.key)
            raise RolloutRefused(f"another rollout of {self.experiment!r} is running "
                                 f"(lock {self.key} held by {holder.decode() if holder else '?'})")
        return self

    def renew(self) -> None:
        self._lock.reacquire()

    def __exit__(self, *exc: object) -> None:
        import redis
        try:
            self._lock.release()
        except redis.RedisError:
            pass   # expired or Redis gone: the TTL frees it
        self._redis.close()


@dataclass
class Rollout:
    lifecycle: Lifecycle
    ref: VersionRef
    experiment: str
    variant: str
    plan: Sequence[float]
    hold_s: float
    lock: RolloutLock
    row: Callable[[dict[str, Any]], None] = lambda row: None
    sample_every_s: float = 0.5

    def run(self) -> tuple[int, list[dict[str, Any]]]:
        lc = self.lifecycle
        rows: list[dict[str, Any]] = []
        with self.lock:
            cfg, _ = lc.experiment(self.experiment)
            model_name = cfg["model"]
            v = lc.variant(cfg, self.variant)
            tv = self.ref.tags.get(TRITON_VERSION_TAG)
            t0 = time.monotonic()
            if tv is None or str(v["target"].get("version")) != tv:
                deployed = lc.deploy(self.ref, self.experiment, self.variant, self.plan[0])
                self.ref = lc.store.resolve(self.ref.model, version=self.ref.version)
                rows.append({"step": "deploy", **deployed})
            else:
                lc.set_weight(self.experiment, self.variant, self.plan[0],
                              f"registry: rollout {self.ref.uri} step 1 at {self.plan[0]:g}%")
            for i, weight in enumerate(self.plan):
                if i:
                    lc.set_weight(self.experiment, self.variant, weight,
                                  f"registry: rollout {self.ref.uri} step {i + 1} at {weight:g}%")
                self.lock.renew()
                state, figures, weights, seconds = self._hold(model_name)
                row = {"step": i + 1, "weights": weights, "seconds": round(seconds, 2),
                       "guardrails": state, "variants": figures}
                rows.append(row)
                self.row(row)
                if state in BAD_STATES:
                    lc.rollback(self.experiment, self.variant,
                                f"registry: rollout of {self.ref.uri} stopped, guardrails {state}")
                    rows.append({"step": "rollback", "guardrails": state, "elapsed_s": round(time.monotonic() - t0, 2)})
                    return ROLLED_BACK, rows
            promoted = lc.promote(self.ref, self.experiment, self.variant)
            rows.append({"step": "promote", **promoted, "elapsed_s": round(time.monotonic() - t0, 2)})
            return PROMOTED, rows

    def _hold(self, model: str) -> tuple[str, dict[str, dict], dict[str, float], float]:
        gw = self.lifecycle.gateway
        first = sample_metrics(gw.metrics(), model)
        t_start = time.monotonic()
        state = "off"
        while True:
            exp = gw.experiment(self.experiment)
            state = (exp.get("guardrails") or {}).get("state", "off")
            if state in BAD_STATES:
                break
            left = self.hold_s - (time.monotonic() - t_start)
            if left <= 0:
                break
            time.sleep(min(self.sample_every_s, left))
            self.lock.renew()
        seconds = time.monotonic() - t_start
        last = sample_metrics(gw.metrics(), model)
        weights = {v["name"]: v["weight"] for v in exp["config"]["variants"]}
        return state, step_figures(first, last, seconds), weights, seconds
