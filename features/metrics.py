"""Prometheus metrics of a feature reader, created against a passed-in registry, children bound once.

Round trips: ``features_read_seconds_count``; rows read: ``features_batch_size_sum``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ReaderMetrics"]

_AGE_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400, float("inf"))
_READ_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, float("inf"))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float("inf"))


class ReaderMetrics:
    """Bound metric children for one (store, view); the request path only calls inc/observe."""

    __slots__ = (
        "missing_entities", "null_values", "defaulted_rows",
        "timeouts", "conn_errors", "circuit_open", "decode_errors", "read_seconds", "batch_size", "age_seconds",
    )

    def __init__(self, registry: CollectorRegistry, store: str, view: str) -> None:
        lv = {"store": store, "view": view}
        names = list(lv)
        missing = Counter("features_missing_entities", "Entities with no stored row (defaults used)", names, registry=registry)
        nulls = Counter("features_null_values", "Null or absent feature values replaced by defaults", names, registry=registry)
        defaulted = Counter("features_defaulted_rows", "Rows answered with defaults because the store failed", names, registry=registry)
        errors = Counter("features_store_errors", "Failed store reads by reason", names + ["reason"], registry=registry)
        # _count of these two is the number of round trips; batch_size's _sum is the rows read.
        read_s = Histogram("features_read_seconds", "Store round-trip time", names, buckets=_READ_BUCKETS, registry=registry)
        batch = Histogram("features_batch_size", "Entities per store read", names, buckets=_BATCH_BUCKETS, registry=registry)
        age = Histogram("features_age_seconds", "Age (now - event time) of the first stored row of a read, "
                        "sampled at most once per interval (default 0.1 s) to keep it off the per-request path", names,
                        buckets=_AGE_BUCKETS, registry=registry)
        self.missing_entities = missing.labels(**lv)
        self.null_values = nulls.labels(**lv)
        self.defaulted_rows = defaulted.labels(**lv)
        self.timeouts = errors.labels(reason="timeout", **lv)
        self.conn_errors = errors.labels(reason="connection", **lv)
        self.circuit_open = errors.labels(reason="circuit_open", **lv)
        self.decode_errors = errors.labels(reason="decode", **lv)
        self.read_seconds = read_s.labels(**lv)
        self.batch_size = batch.labels(**lv)
        self.age_seconds = age.labels(**lv)
