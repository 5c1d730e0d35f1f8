"""Guardrails enforced in the data plane: sliding-window figures from every replica, and
the verdict that rolls a breaching treatment back to control.

Off the hot path, every flush (``RouterService``'s flusher, each ``flush_interval_s``):

1. each running experiment's per-variant ``VariantOutcomes`` (cumulative, see outcomes.py)
   are diffed against what this replica already sent, and the deltas HINCRBYed into the
   Redis hash of the current ``slot_s`` time slot (wall-clock slots: every replica agrees);
2. the last ``window_s / slot_s`` slots are read back and summed: requests, errors, error
   rate and p99 per variant over every replica;
3. ``judge`` (pure) compares them with the experiment's guardrails. A variant is judged only
   with at least ``min_requests`` requests in the window. A treatment (any variant but
   control, with weight > 0) that breaks a guardrail in ``sustain`` consecutive evaluations
   is returned for rollback; the service moves its weight to control in one change.

Control is the reference: when control itself breaks a guardrail its gauge shows it, but
nothing moves (there is no better place to send its units).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from .assign import CompiledExperiment, Router
from .config import ExperimentConfig, Guardrails
from .metrics import RouterMetrics
from .outcomes import BOUNDS, quantile_ms
from .store import ExperimentStore

__all__ = ["VariantFigures", "Verdict", "Rollback", "GuardrailMonitor", "figures_from_fields", "judge",
           "GUARDRAIL_TOKEN"]

GUARDRAIL_TOKEN = "guardrail"  # the token id a guardrail's change is stored under


@dataclass(frozen=True, slots=True)
class VariantFigures:
    requests: int
    errors: int
    p99_ms: float | None  # None: no successful request in the window

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        rate = self.error_rate
        p99 = self.p99_ms
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": None if rate is None else round(rate, 6),
                "p99_ms": None if p99 is None else round(p99, 3)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluation of one experiment."""

    state: str  # off | insufficient_data | ok | breached (the service adds rolled_back)
    window_s: float
    min_requests: int
    variants: dict[str, VariantFigures]
    breaches: dict[str, list[str]]  # variant -> broken guardrails (variants with enough data)
    rollback: tuple[str, ...]  # treatments breaching for `sustain` evaluations in a row


@dataclass(frozen=True, slots=True)
class Rollback:
    """What the service must store: the experiment with the breaching treatments' weight on
    control, written only if the stored version is still ``version`` (the one judged)."""

    experiment: str
    version: int
    variants: tuple[str, ...]
    body: dict[str, Any]
    reason: str
    figures: dict[str, Any]


def figures_from_fields(fields: dict[str, int], variants: list[str]) -> dict[str, VariantFigures]:
    """Per-variant figures from summed Redis fields ``VARIANT|e`` and ``VARIANT|K``."""
    errors = {v: 0 for v in variants}
    buckets: dict[str, dict[int, int]] = {v: {} for v in variants}
    for field, n in fields.items():
        v, _, k = field.rpartition("|")
        if v not in errors:
            continue
        if k == "e":
            errors[v] += n
        elif k.isdigit() and int(k) <= len(BOUNDS):
            buckets[v][int(k)] = buckets[v].get(int(k), 0) + n
    return {v: VariantFigures(errors[v] + sum(buckets[v].values()), errors[v], quantile_ms(buckets[v]))
            for v in variants}


def judge(config: ExperimentConfig, figures: dict[str, VariantFigures], min_requests: int,
          streaks: dict[str, int], sustain: int, window_s: float) -> Verdict:
    """Pure verdict. ``streaks`` (variant -> consecutive breaching evaluations) is updated."""
    g: Guardrails | None = config.guardrails
    breaches: dict[str, list[str]] = {}
    for v in config.variants:
        f = figures[v.name]
        msgs: list[str] = []
        if g is not None and f.requests >= min_requests:
            msgs = g.breaches(f.error_rate or 0.0, f.p99_ms if f.p99_ms is not None else 0.0)
        if msgs:
            breaches[v.name] = msgs
        streaks[v.name] = streaks.get(v.name, 0) + 1 if msgs else 0
    treatments = [v.name for v in config.variants if v.name != config.control and v.weight > 0]
    rollback = tuple(v for v in treatments if streaks[v] >= sustain)
    if g is None or config.status != "running":
        state = "off"
    elif any(v in breaches for v in treatments):
        state = "breached"
    elif treatments and all(figures[v].requests >= min_requests for v in treatments):
        state = "ok"
    else:
        state = "insufficient_data"
    return Verdict(state, window_s, min_requests, figures, breaches, rollback if g is not None else ())


def rollback_change(config: ExperimentConfig, version: int, verdict: Verdict, sustain: int) -> Rollback:
    """The one change that moves every breaching treatment's weight to control."""
    moved = {v: config.variant(v).weight for v in verdict.rollback}
    body = config.to_dict()
    for v in body["variants"]:
        if v["name"] in moved:
            v["weight"] = 0
        elif v["name"] == config.control:
            v["weight"] = round(v["weight"] + sum(moved.values()), 2)
    parts = []
    for v in verdict.rollback:
        f = verdict.variants[v]
        parts.append(f"{v}: {'; '.join(verdict.breaches[v])} ({f.requests} requests, {f.errors} errors)")
    reason = (f"guardrail: {', '.join(parts)} over the last {verdict.window_s:g} s in {sustain} evaluations "
              f"in a row; weight {sum(moved.values()):g} moved to control {config.control!r}")
    figures = {
        "window_s": verdict.window_s, "min_requests": verdict.min_requests, "sustain": sustain,
        "guardrails": config.guardrails.to_dict() if config.guardrails else None,
        "variants": {n: f.to_dict() for n, f in verdict.variants.items()},
        "breaches": {v: verdict.breaches[v] for v in verdict.rollback},
        "moved": moved,
    }
    return Rollback(config.name, version, verdict.rollback, body, reason, figures)


class GuardrailMonitor:
    """This replica's side of the guardrails: outcome deltas out, window figures in, verdicts."""

    __slots__ = ("_store", "_metrics", "window_s", "min_requests", "sustain", "slot_s", "_clock",
                 "_sent", "_streaks", "_verdicts", "last_rollbacks", "_lock")

    def __init__(self, store: ExperimentStore, metrics: RouterMetrics, *, window_s: float = 10.0,
                 min_requests: int = 100, sustain: int = 2, slot_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._metrics = metrics
        self.window_s = window_s
        self.min_requests = min_requests
        self.sustain = sustain
        self.slot_s = slot_s
        self._clock = clock  # wall clock: slots must line up across replicas
        self._sent: dict[tuple[str, str], tuple[Any, int, list[int]]] = {}
        self._streaks: dict[tuple[str, str], dict[str, int]] = {}  # (name, guard id) -> streaks
        self._verdicts: dict[str, tuple[str, Verdict]] = {}  # name -> (guard id, last verdict)
        self.last_rollbacks: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()  # one evaluation at a time: deltas are sent once

    def _deltas(self, exp: CompiledExperiment) -> tuple[dict[str, int], dict[tuple[str, str], tuple[Any, int, list[int]]]]:
        deltas: dict[str, int] = {}
        snaps = {}
        for v, obj in exp.outcomes.items():
            key = (exp.config.name, v)
            errors, lat = obj.errors, list(obj.latency)  # a snapshot: no await in between
            prev = self._sent.get(key)
            p_err, p_lat = (prev[1], prev[2]) if prev is not None and prev[0] is obj else (0, None)
            if errors != p_err:
                deltas[f"{v}|e"] = errors - p_err
            for k, n in enumerate(lat):
                d = n - (p_lat[k] if p_lat is not None else 0)
                if d:
                    deltas[f"{v}|{k}"] = d
            snaps[key] = (obj, errors, lat)
        return deltas, snaps

    async def evaluate(self, router: Router, versions: dict[str, int]) -> list[Rollback]:
        """Flush outcome deltas, read every replica's window, judge; raises ``StoreUnavailable``.

        ``versions``: the stored version of each experiment of ``router`` (taken with it).
        Returns the rollbacks the service should apply (compare-and-set on that version).
        """
        async with self._lock:
            return await self._evaluate(router, versions)

    async def _evaluate(self, router: Router, versions: dict[str, int]) -> list[Rollback]:
        out: list[Rollback] = []
        now_slot = int(self._clock() // self.slot_s)
        live = set()
        for name, exp in router.experiments().items():
            if exp.config.status != "running":
                if self._verdicts.pop(name, None) is not None:
                    for v in exp.config.variants:  # nothing is judged while paused/stopped
                        self._metrics.guardrail_breached.labels(name, v.name).set(0.0)
                continue
            live.add(name)
            g = exp.config.guardrails
            window = g.window_s if g is not None and g.window_s is not None else self.window_s
            min_req = g.min_requests if g is not None and g.min_requests is not None else self.min_requests
            n_slots = max(1, math.ceil(window / self.slot_s))
            deltas, snaps = self._deltas(exp)
            if deltas:
                await self._store.add_outcomes(name, exp.guard_id, now_slot, deltas,
                                               int(window + 3 * self.slot_s) + 5)
            self._sent.update(snaps)
            fields = await self._store.read_outcomes(name, exp.guard_id, range(now_slot - n_slots + 1, now_slot + 1))
            names = [v.name for v in exp.config.variants]
            streaks = self._streaks.setdefault((name, exp.guard_id), {})
            verdict = judge(exp.config, figures_from_fields(fields, names), min_req, streaks, self.sustain, window)
            self._verdicts[name] = (exp.guard_id, verdict)
            for v in names:
                self._metrics.guardrail_breached.labels(name, v).set(1.0 if v in verdict.breaches else 0.0)
                self._metrics.guardrail_rollbacks.labels(name, v)  # a 0 series before any rollback
            if verdict.rollback:
                out.append(rollback_change(exp.config, versions.get(name, 0), verdict, self.sustain))
        for key in [k for k in self._streaks if k[0] not in live or k[1] != router.experiment(k[0]).guard_id]:
            del self._streaks[key]
        for key in [k for k in self._sent if k[0] not in live]:
            del self._sent[key]
        self.last_rollbacks = await self._store.rollbacks()
        return out

    def applied(self, rollback: Rollback, record: dict[str, Any]) -> None:
        """Count a rollback this replica stored (other replicas read ``record`` from Redis)."""
        self.last_rollbacks[rollback.experiment] = record
        for v in rollback.variants:
            self._metrics.guardrail_rollbacks.labels(rollback.experiment, v).inc()

    def state(self, exp: CompiledExperiment, rolled_back: bool) -> dict[str, Any]:
        """The admin API's ``guardrails`` object for one experiment."""
        g = exp.config.guardrails
        got = self._verdicts.get(exp.config.name)
        verdict = got[1] if got is not None and got[0] == exp.guard_id else None
        window = g.window_s if g is not None and g.window_s is not None else self.window_s
        min_req = g.min_requests if g is not None and g.min_requests is not None else self.min_requests
        if verdict is None:
            state = "off" if g is None or exp.config.status != "running" else "insufficient_data"
            variants = {v.name: VariantFigures(0, 0, None).to_dict() for v in exp.config.variants}
        else:
            state = verdict.state
            variants = {n: f.to_dict() for n, f in verdict.variants.items()}
        if rolled_back and g is not None and state != "breached":
            state = "rolled_back"
        return {
            "configured": g.to_dict() if g is not None else None,
            "state": state,
            "window_s": window,
            "min_requests": min_req,
            "variants": variants,
            "last_rollback": self.last_rollbacks.get(exp.config.name),
        }

    def __repr__(self) -> str:
        return (f"<GuardrailMonitor window={self.window_s:g}s min_requests={self.min_requests} "
                f"sustain={self.sustain} experiments={len(self._verdicts)}>")
