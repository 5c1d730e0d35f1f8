"""The request path: route → features → micro-batch → Triton → metrics.

Protocol-free: the v1 and v2 codecs (and any other front) hand it an `InferRequest` of named
arrays; it returns an `InferResult` of named outputs or raises a `GatewayError`. Everything
it touches per request is looked up, not built.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

import numpy as np

from gateway.batcher import MicroBatcher
from gateway.errors import ErrorMap, GatewayError, InvalidField, ModelUnavailable
from gateway.metrics import GatewayMetrics
from gateway.request import FeatureJoin, InferRequest, InferResult
from gateway.unexpected import UnexpectedErrors

# Errors the router's guardrails charge to the variant (5xx-class, from its target); a
# client's 4xx, a 429 shed and features_unavailable say nothing about the variant.
VARIANT_ERRORS = frozenset({"model_unavailable", "deadline_exceeded", "unavailable", "internal"})


class RouterSource(Protocol):
    """The router package's RouterService: a current `router` snapshot whose `assign()`
    picks the variant, and a place to record shadow calls."""

    router: Any

    def record_shadow(self, assignment: Any, latency_s: float, diff: float | None = None) -> None: ...


class Pipeline:
    # Set by the gateway's admission: a shadow call is sheddable traffic (gateway/admission.py).
    shadow_allowed: Callable[[], bool] = staticmethod(lambda: True)
    predlog: Any = None   # gateway/predlog.PredictionLog, set by Components when the log is on

    def __init__(self, routes: RouterSource, features: Any | None, batchers: dict[Any, MicroBatcher],
                 metrics: GatewayMetrics, errors: ErrorMap, unexpected: UnexpectedErrors,
                 max_shadow_tasks: int = 256, joins: dict[str, FeatureJoin] | None = None,
                 defaults: dict[str, Any] | None = None) -> None:
        self._routes, self._features, self._batchers = routes, features, batchers
        # Public model -> where its online features go (filled at start-up and on reloads).
        self._joins = joins if joins is not None else {}
        # Triton models no experiment names -> their one (default) assignment.
        self._defaults = defaults if defaults is not None else {}
        self._metrics, self._errors = metrics, errors
        self._unexpected = unexpected
        self._shadow_tasks: set[asyncio.Task] = set()
        self._max_shadow_tasks = max_shadow_tasks

    def __repr__(self) -> str:
        return (f"<Pipeline targets={len(self._batchers)} features={'on' if self._features else 'off'} "
                f"[shadow in flight {len(self._shadow_tasks)}]>")

    async def infer(self, req: InferRequest, deadline: float) -> InferResult:
        """Route, join features, batch, infer: the one entry point of every front.

        `req.inputs` are named arrays already checked against the model's contract (see
        `InferRequest`); the result holds every output of the model for this request's rows.
        """
        t0 = time.perf_counter()
        try:
            a = self._defaults.get(req.model) or self._routes.router.assign(
                req.model, req.unit_id, req.override, req.authenticated)
        except Exception as exc:
            err = self._errors.translate(exc)
            self._unexpected.report(err, "router", req.model)
            if err is exc:
                raise
            raise err from exc
        vm = self._metrics.variant(req.model, a.variant)
        try:
            inputs, feats, t_feat = req.inputs, None, t0
            if req.entity is not None:
                if self._features is None:
                    raise InvalidField("entity", "online features are off on this gateway")
                join = self._joins.get(req.model)
                if join is None:
                    raise InvalidField("entity", f"model {req.model!r} takes no online features")
                feats = await self._features.get(req.entity)
                inputs = join.apply(inputs, feats.values)
                t_feat = time.perf_counter()
                vm.features.observe(t_feat - t0)
            batcher = self._batchers.get(a.target)
            if batcher is None:
                raise ModelUnavailable(f"no backend for {a.target}")
            out, info = await batcher.submit(inputs, deadline)
            t_end = time.perf_counter()
            vm.queue.observe(info.t_sent - t_feat)
            vm.inference.observe(info.t_done - info.t_sent)
            vm.latency.observe(t_end - t0)
            if a.outcome is not None:  # the guardrails' per-variant counts
                a.outcome.ok(t_end - t0)
            if self.predlog is not None:   # a bounded in-memory append; Redis is written off the hot path
                self.predlog.record(req, a, out, t_end - t0)
            if a.shadow is not None:
                self._start_shadow(a, inputs, out, deadline)
            timings = None
            if req.want_timings:
                timings = {"features": round((t_feat - t0) * 1e3, 4),
                           "queue": round((info.t_sent - t_feat) * 1e3, 4),
                           "inference": round((info.t_done - info.t_sent) * 1e3, 4),
                           "total": round((t_end - t0) * 1e3, 4),
                           "batch_rows": info.rows}
            return InferResult(a.experiment, a.variant, a.target.version, out, feats, timings)
        except Exception as exc:  # a CancelledError passes through untouched
            err = self._errors.translate(exc)
            self._unexpected.report(err, "pipeline", req.model, a.variant)
            vm.errors[err.code].inc()
            if a.outcome is not None and err.code in VARIANT_ERRORS:
                a.outcome.failed()
            if err is exc:
                raise
            raise err from exc
        finally:
            vm.requests.inc()

    def _start_shadow(self, a: Any, inputs: dict[str, np.ndarray], primary: dict[str, np.ndarray],
                      deadline: float) -> None:
        """Send the same rows (same feature snapshot) to the shadow; never wait for it."""
        batcher = self._batchers.get(a.shadow[1])
        if batcher is None or len(self._shadow_tasks) >= self._max_shadow_tasks or not self.shadow_allowed():
            self._metrics.shadow_dropped.inc()
            return
        try:
            fut = batcher.submit(inputs, deadline)
        except GatewayError:
            self._metrics.shadow_dropped.inc()
            return
        task = asyncio.ensure_future(self._await_shadow(a, fut, primary, time.perf_counter()))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _await_shadow(self, a: Any, fut: asyncio.Future, primary: dict[str, np.ndarray], t0: float) -> None:
        try:
            out, _ = await fut
        except (GatewayError, asyncio.CancelledError):
            self._metrics.shadow_dropped.inc()
            return
        self._routes.record_shadow(a, time.perf_counter() - t0, _max_diff(out, primary))

    async def drain_shadows(self, timeout: float) -> None:
        if self._shadow_tasks:
            await asyncio.wait(list(self._shadow_tasks), timeout=timeout)


def _max_diff(out: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> float | None:
    """The largest absolute difference over the numeric outputs both answers share (None when
    there is none to compare, e.g. BYTES only)."""
    diffs = [float(np.abs(out[k].astype(np.float64) - v.astype(np.float64)).max())
             for k, v in primary.items() if k in out and v.dtype.kind in "biuf" and v.size
             and out[k].shape == v.shape]
    return max(diffs) if diffs else None
