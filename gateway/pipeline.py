"""The request path: route → features → micro-batch → Triton → metrics.

Protocol-free: the v1 and v2 codecs hand it an `InferRequest`; it returns an `InferResult`
or raises a `GatewayError`. Everything it touches per request is looked up, not built.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import numpy as np

from gateway.batcher import MicroBatcher
from gateway.errors import ErrorMap, GatewayError, InvalidField, ModelUnavailable
from gateway.metrics import GatewayMetrics
from gateway.request import InferRequest, InferResult
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
    predlog: Any = None   # gateway/predlog.PredictionLog, set by Components when the log is on

    def __init__(self, routes: RouterSource, features: Any | None, batchers: dict[Any, MicroBatcher],
                 metrics: GatewayMetrics, errors: ErrorMap, unexpected: UnexpectedErrors,
                 max_shadow_tasks: int = 256) -> None:
        self._routes, self._features, self._batchers = routes, features, batchers
        self._metrics, self._errors = metrics, errors
        self._unexpected = unexpected
        self._feature_width = features.width if features is not None else 0
        self._shadow_tasks: set[asyncio.Task] = set()
        self._max_shadow_tasks = max_shadow_tasks

    def __repr__(self) -> str:
        return (f"<Pipeline targets={len(self._batchers)} features={'on' if self._features else 'off'} "
                f"[shadow in flight {len(self._shadow_tasks)}]>")

    async def infer(self, req: InferRequest, deadline: float) -> InferResult:
        t0 = time.perf_counter()
        try:
            a = self._routes.router.assign(req.model, req.unit_id, req.override, req.authenticated)
        except Exception as exc:
            err = self._errors.translate(exc)
            self._unexpected.report(err, "router", req.model)
            if err is exc:
                raise
            raise err from exc
        vm = self._metrics.variant(req.model, a.variant)
        try:
            rows, feats, t_feat = req.rows, None, t0
            if req.entity is not None:
                if self._features is None:
                    raise InvalidField("entity", "online features are off on this gateway")
                feats = await self._features.get(req.entity)
                rows = self._join(feats.values, rows)
                t_feat = time.perf_counter()
                vm.features.observe(t_feat - t0)
            batcher = self._batchers.get(a.target)
            if batcher is None:
                raise ModelUnavailable(f"no backend for {a.target}")
            out, info = await batcher.submit(rows, deadline)
            t_end = time.perf_counter()
            vm.queue.observe(info.t_sent - t_feat)
            vm.inference.observe(info.t_done - info.t_sent)
            vm.latency.observe(t_end - t0)
            if a.outcome is not None:  # the guardrails' per-variant counts
                a.outcome.ok(t_end - t0)
            if self.predlog is not None:   # a bounded in-memory append; Redis is written off the hot path
                self.predlog.record(req, a, out, t_end - t0)
            if a.shadow is not None:
                self._start_shadow(a, rows, out, deadline)
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

    def _join(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n, fw = rows.shape[0], self._feature_width
        x = np.empty((n, fw + rows.shape[1]), dtype=np.float32)
        x[:, :fw] = values
        x[:, fw:] = rows
        return x

    def _start_shadow(self, a: Any, rows: np.ndarray, primary: np.ndarray, deadline: float) -> None:
        """Send the same rows (same feature snapshot) to the shadow; never wait for it."""
        batcher = self._batchers.get(a.shadow[1])
        if batcher is None or len(self._shadow_tasks) >= self._max_shadow_tasks:
            self._metrics.shadow_dropped.inc()
            return
        try:
            fut = batcher.submit(rows, deadline)
        except GatewayError:
            self._metrics.shadow_dropped.inc()
            return
        task = asyncio.ensure_future(self._await_shadow(a, fut, primary, time.perf_counter()))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _await_shadow(self, a: Any, fut: asyncio.Future, primary: np.ndarray, t0: float) -> None:
        try:
            out, _ = await fut
        except (GatewayError, asyncio.CancelledError):
            self._metrics.shadow_dropped.inc()
            return
        diff = float(np.abs(out - primary).max())
        self._routes.record_shadow(a, time.perf_counter() - t0, diff)

    async def drain_shadows(self, timeout: float) -> None:
        if self._shadow_tasks:
            await asyncio.wait(list(self._shadow_tasks), timeout=timeout)


