"""Per-variant Prometheus metrics with label children bound once, not per request.

With ``--workers N`` the metrics are kept in prometheus-client's multiprocess mode: the
supervisor gives its workers a directory (``INFERGATE_METRICS_DIR``, and
``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client), every worker writes its values to files
there and a scrape, whichever worker answers it, sums them. Our own variable decides, not
prometheus-client's: Feast sets that one in ``os.environ`` when it is imported. Gauges say how
they combine across workers (``multiprocess_mode``); gauges read from a function at scrape
time in one process are sampled into their files every ``SAMPLE_EVERY_S`` instead.

What the request path touches is a tally (``gateway/tally.py``), not the prometheus-client
child itself: in one process a tally adds to plain Python numbers and the sums are folded into
the children when the registry is collected (a scrape, ``get_sample_value``), so a scrape sees
every request answered before it, and a request costs no lock. With ``--workers N`` a tally
writes through to the child at once: another worker's scrape reads the files, not our memory.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, GCCollector, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import METRICS_DIR_ENV
from gateway.tally import CounterTally, Folder, HistogramTally, counter_tally, histogram_tally
from httpcommon.errors import DATA_PLANE

# Latency buckets from 100 µs to 5 s: the interesting part of this gateway is sub-millisecond.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
                   0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The `reason` label: the data plane's codes from the one list (`httpcommon.errors`).
ERROR_CODES = DATA_PLANE


SAMPLE_EVERY_S = 1.0
__all__ = ["GatewayMetrics", "VariantMetrics", "CONTENT_TYPE_LATEST", "exposition", "multiprocess"]


def multiprocess() -> bool:
    """True in a worker of ``--workers N``: metric values live in the shared directory."""
    return bool(os.environ.get(METRICS_DIR_ENV))


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets: this process's registry, or every worker's values summed."""
    if not multiprocess():
        return generate_latest(registry)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=os.environ[METRICS_DIR_ENV])
    return generate_latest(merged)


class VariantMetrics:
    """The bound children for one (model, variant): what the request path touches."""

    __slots__ = ("requests", "latency", "features", "queue", "inference", "errors")

    def __init__(self, m: "GatewayMetrics", model: str, variant: str) -> None:
        self.requests: CounterTally = m.counter(m.requests.labels(model, variant))
        self.latency: HistogramTally = m.histogram(m.latency.labels(model, variant))
        self.features: HistogramTally = m.histogram(m.stage.labels(model, variant, "features"))
        self.queue: HistogramTally = m.histogram(m.stage.labels(model, variant, "queue"))
        self.inference: HistogramTally = m.histogram(m.stage.labels(model, variant, "inference"))
        self.errors = {code: m.counter(m.errors.labels(model, variant, code)) for code in ERROR_CODES}


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Registered before our metrics: the registry collects in order, so the pending
        # tallies are folded into the children before any of them is read.
        self._folder = Folder()
        registry.register(self._folder)
        # python_gc_collections_total and friends, read at scrape time (`gc_threshold`).
        GCCollector(registry=registry)
        self.requests = Counter("infergate_requests_total", "Requests answered, by variant",
                                ["model", "variant"], registry=registry)
        self.errors = Counter("infergate_errors_total", "Requests answered with an error, by reason",
                              ["model", "variant", "reason"], registry=registry)
        self.latency = Histogram("infergate_request_duration_seconds",
                                 "End-to-end latency inside the gateway", ["model", "variant"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.stage = Histogram("infergate_stage_duration_seconds",
                               "Per-stage latency: features, queue wait, inference",
                               ["model", "variant", "stage"], buckets=LATENCY_BUCKETS,
                               registry=registry)
        self.batch_rows = Histogram("infergate_batch_rows", "Rows per Triton call", ["target"],
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.batch_requests = Histogram("infergate_batch_requests", "Requests per Triton call",
                                        ["target"], buckets=BATCH_BUCKETS, registry=registry)
        self.queued_rows = Gauge("infergate_queued_rows", "Rows waiting in a micro-batcher",
                                 ["target"], registry=registry, multiprocess_mode="livesum")
        self.in_flight = Gauge("infergate_in_flight_requests", "Requests inside the gateway",
                               registry=registry, multiprocess_mode="livesum")
        self.rejected = Counter("infergate_rejected_total",
                                "Requests refused before routing (bad input, overload), by reason",
                                ["reason"], registry=registry)
        self.shadow_dropped = Counter("infergate_shadow_dropped_total",
                                      "Shadow calls not made or failed (the primary is unaffected)",
                                      registry=registry)
        # Admission (gateway/admission.py): the limit, what it is measured against, and who
        # was let in or refused, bound per (reason, priority) at start-up.
        self.admission_limit = Gauge("infergate_admission_limit",
                                     "Requests this gateway admits at once now (adaptive limit)",
                                     registry=registry, multiprocess_mode="livesum")
        self.admission_floor = Gauge("infergate_admission_floor_seconds",
                                     "Round trip of an admitted request under light load (the floor)",
                                     registry=registry, multiprocess_mode="livemax")
        self.admission_estimate = Gauge("infergate_admission_estimate_seconds",
                                        "Mean round trip of admitted requests in the last window",
                                        registry=registry, multiprocess_mode="livemax")
        self.admission_admitted = Counter("infergate_admission_admitted_total",
                                          "Requests admitted, by priority", ["priority"], registry=registry)
        self.admission_shed = Counter("infergate_admission_shed_total",
                                      "Requests refused at admission, by reason and priority",
                                      ["reason", "priority"], registry=registry)
        self.admission_penalised = Counter("infergate_admission_penalised_total",
                                           "429s held back because the connection ignored Retry-After",
                                           registry=registry)
        self.admission_front_shed = Counter("infergate_admission_front_shed_total",
                                            "429s answered by the HTTP front as the request was parsed, before a "
                                            "task was made for it (also counted in infergate_admission_shed_total)",
                                            registry=registry)
        self.admission_front_queue = Gauge("infergate_admission_front_queue",
                                           "Inference requests the HTTP front has handed to a task that has not "
                                           "started yet (they count against the limit)",
                                           registry=registry, multiprocess_mode="livesum")
        self.admission_bad_priority = Counter("infergate_admission_bad_priority_total",
                                              "Malformed x-priority headers (ignored)", registry=registry)
        self._variants: dict[tuple[str, str], VariantMetrics] = {}
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        self.rejected_by_code = {code: self.counter(self.rejected.labels(code)) for code in ERROR_CODES}

    def counter(self, child: Counter) -> CounterTally:
        """What the request path increments instead of `child` (see the module docstring)."""
        return counter_tally(child, self._folder, multiprocess())

    def histogram(self, child: Histogram) -> HistogramTally:
        """What the request path observes into instead of `child`."""
        return histogram_tally(child, self._folder, multiprocess())

    def variant(self, model: str, variant: str) -> VariantMetrics:
        """Bound children for a variant; made once per variant (variants appear on reload)."""
        key = (model, variant)
        vm = self._variants.get(key)
        if vm is None:
            vm = self._variants[key] = VariantMetrics(self, model, variant)
        return vm

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Report ``read()`` as the gauge's value: read at scrape time in one process; with
        several workers, sampled every ``SAMPLE_EVERY_S`` by ``sample_forever``."""
        if multiprocess():
            self._sampled.append((gauge, read))
        else:
            gauge.set_function(read)

    def sample(self) -> None:
        for gauge, read in self._sampled:
            gauge.set(read())

    async def sample_forever(self) -> None:
        """Only with several workers; cancelled at shutdown."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY_S)
