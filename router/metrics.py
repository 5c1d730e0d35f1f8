"""Prometheus metrics the router owns, registered once per service on a given registry.

Label children are bound once per (experiment, variant) and cached, so recording a shadow
result does no label look-up after the first time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RouterMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DIFF_BUCKETS = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouterMetrics:
    __slots__ = ("shadow_latency", "shadow_diff", "srm_p_value", "srm_flagged", "exposures", "units",
                 "units_dropped", "config_version", "guardrail_rollbacks", "guardrail_breached",
                 "_shadow_children")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.shadow_latency = Histogram(
            "router_shadow_latency_seconds", "Latency of shadow (mirrored) inference calls",
            ["experiment", "variant"], registry=registry, buckets=_LATENCY_BUCKETS,
        )
        self.shadow_diff = Histogram(
            "router_shadow_prediction_diff", "Absolute difference between shadow and primary predictions",
            ["experiment", "variant"], registry=registry, buckets=_DIFF_BUCKETS,
        )
        self.srm_p_value = Gauge(
            "router_srm_p_value", "Chi-square p-value of distinct units per variant vs configured weights",
            ["experiment"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.srm_flagged = Gauge(
            "router_srm_flagged", "1 when the sample-ratio-mismatch check fails (p < alpha)",
            ["experiment"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.exposures = Gauge(
            "router_exposures", "Exposures of the current allocation, aggregated over replicas",
            ["experiment", "variant"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.units = Gauge(
            "router_units", "Distinct units exposed in the current allocation, aggregated over replicas",
            ["experiment", "variant"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.units_dropped = Counter(
            "router_units_dropped_total",
            "Unit ids not counted for SRM: over the pending bound while Redis was unavailable",
            ["experiment"], registry=registry,
        )
        self.guardrail_rollbacks = Counter(
            "router_guardrail_rollbacks_total",
            "Treatments whose weight a guardrail breach moved to control (counted by the replica that applied it)",
            ["experiment", "variant"], registry=registry,
        )
        self.guardrail_breached = Gauge(
            "router_guardrail_breached", "1 while the variant breaks a guardrail over the window, else 0",
            ["experiment", "variant"], registry=registry, multiprocess_mode="livemax",
        )
        self.config_version = Gauge(
            "router_config_version", "Stored version of the live experiment config",
            ["experiment"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self._shadow_children: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}

    def record_shadow(self, experiment: str, variant: str, latency_s: float, diff: float | None) -> None:
        key = (experiment, variant)
        children = self._shadow_children.get(key)
        if children is None:
            children = (self.shadow_latency.labels(*key), self.shadow_diff.labels(*key))
            self._shadow_children[key] = children
        children[0].observe(latency_s)
        if diff is not None:
            children[1].observe(diff)

    def shadow_figures(self, experiment: str, variant: str) -> dict[str, float | int | None]:
        """This process's shadow calls of one variant so far: count, mean latency, mean and
        largest-bucket prediction difference (read from the histograms, nothing recorded)."""
        children = self._shadow_children.get((experiment, variant))
        if children is None:
            return {"calls": 0, "latency_ms_mean": None, "diff_mean": None, "diffs": 0}
        lat, diff = children
        calls = sum(b.get() for b in lat._buckets)  # noqa: SLF001 - the histogram's own counts
        diffs = sum(b.get() for b in diff._buckets)  # noqa: SLF001
        return {"calls": int(calls),
                "latency_ms_mean": lat._sum.get() / calls * 1e3 if calls else None,  # noqa: SLF001
                "diff_mean": diff._sum.get() / diffs if diffs else None,  # noqa: SLF001
                "diffs": int(diffs)}

    def __repr__(self) -> str:
        return f"<RouterMetrics shadow_series={len(self._shadow_children)}>"
