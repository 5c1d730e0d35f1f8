"""Per-variant time series for the console: a bounded ring buffer sampled once a second.

Nothing on the request path: every second a background task reads the cumulative figures the
request path already keeps -- the Prometheus children bound per (model, variant) (requests,
errors by reason) and the router's ``VariantOutcomes`` latency buckets (the guardrails') --
and appends one point of deltas per variant. ``seconds`` points are kept (300: five minutes),
so memory is bounded by variants x seconds x the few non-empty latency buckets of a second.

The figures are this process's: with ``--workers N`` each worker keeps its own series and the
admin request is answered by one of them (the console says so).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from gateway.metrics import GatewayMetrics

__all__ = ["VariantSeries"]

log = logging.getLogger("infergate")


class VariantSeries:
    """``sample()`` once a second (``run``); ``points(name)`` for the admin route."""

    def __init__(self, metrics: GatewayMetrics, routes: Any, seconds: int = 300,
                 interval_s: float = 1.0) -> None:
        self._metrics = metrics
        self._routes = routes  # the RouterService (its current `router` snapshot)
        self.seconds = seconds
        self.interval_s = interval_s
        self._points: dict[str, deque] = {}
        # (experiment, variant) -> (requests, {reason: errors}, outcomes object, latency copy)
        self._last: dict[tuple[str, str], tuple[float, dict[str, float], Any, list[int]]] = {}

    def __repr__(self) -> str:
        return f"<VariantSeries experiments={len(self._points)} seconds={self.seconds}>"

    def sample(self, now: float | None = None) -> None:
        """One point per live experiment: each variant's deltas since the last sample."""
        now = time.time() if now is None else now
        router = self._routes.router
        live = set()
        for name, exp in router.experiments().items():
            live.add(name)
            model = exp.config.model
            point: dict[str, Any] = {}
            for v in exp.config.variants:
                vm = self._metrics.variant(model, v.name)
                requests = vm.requests.get()   # a tally: with what is not folded yet
                errors = {code: c.get() for code, c in vm.errors.items()}
                outcome = exp.outcomes.get(v.name)
                latency = list(outcome.latency) if outcome is not None else []
                key = (name, v.name)
                prev = self._last.get(key)
                self._last[key] = (requests, errors, outcome, latency)
                if prev is None:
                    continue  # the first sample is the baseline
                p_req, p_err, p_obj, p_lat = prev
                # A weight change starts fresh outcome counters (a new object, from zero).
                base = p_lat if p_obj is outcome else [0] * len(latency)
                lat = {k: n - base[k] for k, n in enumerate(latency) if n != base[k]}
                err = {code: int(n - p_err.get(code, 0)) for code, n in errors.items() if n != p_err.get(code, 0)}
                point[v.name] = {"requests": int(requests - p_req), "errors": err, "latency": lat}
            if point:
                self._points.setdefault(name, deque(maxlen=self.seconds)).append((now, point))
        for name in [n for n in self._points if n not in live]:
            del self._points[name]
        for key in [k for k in self._last if k[0] not in live]:
            del self._last[key]

    def points(self, name: str, seconds: int | None = None) -> list[tuple[float, dict[str, Any]]]:
        pts = self._points.get(name)
        if not pts:
            return []
        out = list(pts)
        if seconds is not None:
            out = out[-seconds:]
        return out

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled (started in the gateway's lifespan)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:  # a bug must not end the series for the life of the process
                log.exception("series: sampling failed; retrying next interval")
