"""Exposure aggregation across replicas and the live SRM verdict.

The hot path only bumps a per-bucket list counter inside ``CompiledExperiment``; this module,
off the hot path, turns those into per-variant deltas, HINCRBYs them into Redis (so every
replica sees the totals of all), and runs the SRM check on the result. Counts are keyed by
allocation id, so a weight change starts fresh counts.
"""

from __future__ import annotations

from .assign import CompiledExperiment, Router
from .metrics import RouterMetrics
from .srm import SrmResult, srm_check
from .store import ExperimentStore

__all__ = ["ExposureAggregator"]


class ExposureAggregator:
    __slots__ = ("_store", "_metrics", "alpha", "_flushed", "_totals")

    def __init__(self, store: ExperimentStore, metrics: RouterMetrics, alpha: float = 0.001) -> None:
        self._store = store
        self._metrics = metrics
        self.alpha = alpha
        # What this replica already sent, per allocation, with the counter list it was read
        # from: a config that leaves and comes back gets fresh counters (a new list), and
        # must not be diffed against the old ones (that sent negative deltas).
        self._flushed: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._totals: dict[str, tuple[str, dict[str, int]]] = {}  # name -> (alloc, all replicas)

    async def flush(self, router: Router) -> None:
        """Send new exposures of every running experiment; raises ``StoreUnavailable``.

        Deltas are only marked as sent after Redis accepted them, so an outage delays
        counts but loses none.
        """
        live = set()
        for name, exp in router.experiments().items():
            if exp.config.status != "running":
                continue
            key = (name, exp.alloc_id)
            live.add(key)
            counts = exp.variant_exposures()
            source, prev = self._flushed.get(key) or (None, None)
            if source is not exp.exposures or prev is None:
                prev = [0] * len(counts)
            deltas = {v.name: c - p for v, c, p in zip(exp.config.variants, counts, prev)}
            totals = await self._store.add_exposures(name, exp.alloc_id, deltas)
            self._flushed[key] = (exp.exposures, counts)
            self._totals[name] = (exp.alloc_id, totals)
            res = self.srm(exp)
            if res.p_value is not None:
                self._metrics.srm_p_value.labels(name).set(res.p_value)
                self._metrics.srm_flagged.labels(name).set(1.0 if res.flagged else 0.0)
            for v in exp.config.variants:
                self._metrics.exposures.labels(name, v.name).set(totals.get(v.name, 0))
        for key in [k for k in self._flushed if k not in live]:
            del self._flushed[key]

    def counts(self, exp: CompiledExperiment) -> tuple[str, dict[str, int]]:
        """("aggregate", totals of all replicas) when flushed, else ("local", this replica's)."""
        got = self._totals.get(exp.config.name)
        if got is not None and got[0] == exp.alloc_id:
            return "aggregate", {v.name: got[1].get(v.name, 0) for v in exp.config.variants}
        return "local", dict(zip((v.name for v in exp.config.variants), exp.variant_exposures()))

    def srm(self, exp: CompiledExperiment) -> SrmResult:
        counts = self.counts(exp)[1]
        observed = [counts[v.name] for v in exp.config.variants]
        return srm_check(observed, [v.weight for v in exp.config.variants], self.alpha)

    def __repr__(self) -> str:
        return f"<ExposureAggregator experiments={len(self._totals)} alpha={self.alpha}>"
