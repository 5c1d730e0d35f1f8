"""Checks a source feature table must pass before anything downstream is written.

Schema (columns and types), ranges, null rates, and drift against the last accepted table
(population stability index on the accepted table's deciles, the usual 0.25 bar for "shifted").
Pure: frames in, a report out; the report names every failed column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.repo.datagen import FEATURE_NAMES

RATES = ("cart_abandon_rate", "ctr_7d", "refund_rate", "churn_risk")
UNBOUNDED = ("loyalty_score",)
# [low, high] per column; every other feature is a non-negative amount or count.
RANGES: dict[str, tuple[float, float]] = {
    **{c: (0.0, 1.0) for c in RATES},
    **{c: (-np.inf, np.inf) for c in UNBOUNDED},
}
NULLABLE = ("avg_session_minutes", "avg_order_value", "ctr_7d", "refund_rate")


@dataclass(frozen=True)
class Limits:
    max_null_rate: float = 0.05       # a nullable column; the others must have none
    max_psi: float = 0.25             # population stability index vs the accepted table
    min_rows: int = 100


def _psi(ref: np.ndarray, new: np.ndarray, bins: int = 10) -> float:
    ref, new = ref[~np.isnan(ref)], new[~np.isnan(new)]
    if len(ref) == 0 or len(new) == 0:
        return 0.0
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    q = np.bincount(np.searchsorted(edges, new, side="right"), minlength=len(edges) + 1) / len(new)
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    return float(np.sum((q - p) * np.log(q / p)))


def validate(frame: pd.DataFrame, accepted: pd.DataFrame | None, limits: Limits = Limits()) -> dict[str, Any]:
    """``{"passed", "failures": [{"column", "check", "detail"}], "columns": {name: stats}}``."""
    failures: list[dict[str, str]] = []

    def fail(column: str, check: str, detail: str) -> None:
        failures.append({"column": column, "check": check, "detail": detail})

    required = ("user_id", "event_timestamp", *FEATURE_NAMES)
    for c in required:
        if c not in frame.columns:
            fail(c, "schema", "missing column")
    if len(frame) < limits.min_rows:
        fail("*", "rows", f"{len(frame)} rows < {limits.min_rows}")
    if "user_id" in frame.columns:
        if frame["user_id"].dtype.kind not in "iu":
            fail("user_id", "schema", f"dtype {frame['user_id'].dtype}, expected an integer")
        elif frame["user_id"].isna().any():
            fail("user_id", "nulls", "null entity keys")
    if "event_timestamp" in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame["event_timestamp"]):
        fail("event_timestamp", "schema", f"dtype {frame['event_timestamp'].dtype}, expected a timestamp")
    stats: dict[str, dict[str, Any]] = {}
    for c in FEATURE_NAMES:
        if c not in frame.columns:
            continue
        if frame[c].dtype.kind not in "fiu":
            fail(c, "schema", f"dtype {frame[c].dtype}, expected a number")
            continue
        x = frame[c].to_numpy(np.float64)
        null_rate = float(np.isnan(x).mean()) if len(x) else 0.0
        lo, hi = RANGES.get(c, (0.0, np.inf))
        vals = x[~np.isnan(x)]
        out_of_range = int(((vals < lo) | (vals > hi)).sum()) + int(np.isinf(vals).sum() if np.isfinite(hi) else 0)
        s = {"null_rate": round(null_rate, 4), "min": float(vals.min()) if len(vals) else None,
             "max": float(vals.max()) if len(vals) else None, "out_of_range": out_of_range}
        cap = limits.max_null_rate if c in NULLABLE else 0.0
        if null_rate > cap:
            fail(c, "nulls", f"null rate {null_rate:.2%} > {cap:.2%}")
        if out_of_range:
            fail(c, "range", f"{out_of_range} values outside [{lo}, {hi}]")
        if accepted is not None and c in accepted.columns:
            psi = _psi(accepted[c].to_numpy(np.float64), x)
            s["psi"] = round(psi, 4)
            if psi > limits.max_psi:
                fail(c, "drift", f"PSI {psi:.3f} > {limits.max_psi} against the last accepted table")
        stats[c] = s
    return {"passed": not failures, "failures": failures, "rows": len(frame),
            "drift_reference": accepted is not None, "columns": stats,
            "limits": {"max_null_rate": limits.max_null_rate, "max_psi": limits.max_psi,
                       "min_rows": limits.min_rows}}


def summary(report: dict[str, Any]) -> str:
    """One line naming each failed column and check."""
    by_col: dict[str, list[str]] = {}
    for f in report["failures"]:
        by_col.setdefault(f["column"], []).append(f"{f['check']} ({f['detail']})")
    return "; ".join(f"{c}: {', '.join(v)}" for c, v in by_col.items())
