"""The quality report of a trained version, and the gate a version must pass to be published.

Measured against real rows the GAN never saw (the dataset's holdout):
- ``c2st_auc``: classifier two-sample test (synthetic.c2st), 0.5 = indistinguishable;
- ``sdmetrics``: SDV's QualityReport, per-column shape (KS complement) and pair trends
  (correlation similarity), overall = their mean;
- ``privacy``: distance from each synthetic row to its closest training row (DCR), in the
  per-column CDF space of the codec, against the 1st percentile of the same distance for real
  holdout rows; the share of synthetic rows closer than that must stay under 1 %.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from synthetic.c2st import c2st_auc
from synthetic.datasets import Table
from synthetic.sampler import Sampler

__all__ = ["Bars", "BARS", "evaluate", "gate_failures", "REPORT_SEED"]

REPORT_SEED = 20_261_129   # the synthetic sample a report is computed on


@dataclass(frozen=True)
class Bars:
    c2st_auc_max: float = 0.85
    quality_min: float = 0.85
    close_fraction_max: float = 0.01   # strictly below


BARS = Bars()


def _frame(cols: Mapping[str, np.ndarray]):
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v, np.float64) for k, v in cols.items()})


def _sdmetrics(real: Mapping[str, np.ndarray], synth: Mapping[str, np.ndarray]) -> dict[str, Any]:
    from sdmetrics.reports import QualityReport

    meta = {"tables": {"t": {"columns": {k: {"sdtype": "numerical"} for k in real}}}}
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate({"t": _frame(real)}, {"t": _frame(synth)}, meta, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes")
    pairs = report.get_details("Column Pair Trends").dropna(subset=["Score"])
    return {
        "overall": round(float(report.get_score()), 4),
        "column_shapes": round(float(props["Column Shapes"]), 4),
        "column_pair_trends": round(float(props["Column Pair Trends"]), 4),
        "columns": {r["Column"]: round(float(r["Score"]), 4) for _, r in shapes.iterrows()},
        "pairs_scored": int(len(pairs)),
        "worst_pairs": [
            {"columns": [r["Column 1"], r["Column 2"]], "score": round(float(r["Score"]), 4),
             "real": round(float(r["Real Correlation"]), 3), "synthetic": round(float(r["Synthetic Correlation"]), 3)}
            for _, r in pairs.nsmallest(3, "Score").iterrows()],
    }


def _privacy(sampler: Sampler, table: Table, synth: Mapping[str, np.ndarray]) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors

    codec = sampler.codec
    train = codec.to_uniform(table.train)
    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train)
    real_d = nn.kneighbors(codec.to_uniform(table.holdout))[0][:, 0]
    syn_d = nn.kneighbors(codec.to_uniform(synth))[0][:, 0]
    threshold = float(np.percentile(real_d, 1))
    return {
        "space": "per-column CDF of the training data (null = -1), Euclidean",
        "real_to_train_p1": round(threshold, 6),
        "real_to_train_median": round(float(np.median(real_d)), 6),
        "synthetic_to_train_median": round(float(np.median(syn_d)), 6),
        "exact_copies": int((syn_d == 0).sum()),
        "close_fraction": round(float((syn_d < threshold).mean()), 5),
    }


def evaluate(sampler: Sampler, table: Table, *, rows: int | None = None, seed: int = REPORT_SEED,
             bars: Bars = BARS) -> dict[str, Any]:
    """The full report (a JSON-able dict) of ``sampler`` against ``table``'s holdout."""
    t0 = time.perf_counter()
    names = sampler.columns
    holdout = {k: np.asarray(table.holdout[k]) for k in names}
    n = rows or len(next(iter(holdout.values())))
    data = sampler.sample(n, seed)
    synth = {k: data[:, i] for i, k in enumerate(names)}
    real_x = np.column_stack([holdout[k] for k in names])
    report: dict[str, Any] = {
        "dataset": table.name,
        "source": table.source,
        "rows": {"train": len(next(iter(table.train.values()))), "holdout": len(real_x), "synthetic": n},
        "sample_seed": seed,
        "c2st_auc": round(c2st_auc(real_x, data, seed=0), 4),
        # The same test between two real samples: what "indistinguishable" reads as here.
        "c2st_auc_real_vs_real": round(c2st_auc(
            real_x, np.column_stack([np.asarray(table.train[k])[:n] for k in names]), seed=0), 4),
        "sdmetrics": _sdmetrics(holdout, synth),
        "privacy": _privacy(sampler, table, synth),
        "null_rates": {k: {"real": round(float(np.isnan(holdout[k]).mean()), 4),
                           "synthetic": round(float(np.isnan(synth[k]).mean()), 4)}
                       for k in names if np.isnan(holdout[k]).any() or np.isnan(synth[k]).any()},
        "bars": {"c2st_auc_max": bars.c2st_auc_max, "quality_min": bars.quality_min,
                 "close_fraction_max": bars.close_fraction_max},
        "training": {k: sampler.info.get(k) for k in ("steps_done", "train_seconds", "config", "torch")},
    }
    failures = gate_failures(report, bars)
    report["gate"] = {"passed": not failures, "failures": failures}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def gate_failures(report: Mapping[str, Any], bars: Bars = BARS) -> list[str]:
    """Each failed check, named with its value and bar; empty when the version may be published."""
    out = []
    try:
        auc = float(report["c2st_auc"])
        quality = float(report["sdmetrics"]["overall"])
        close = float(report["privacy"]["close_fraction"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"report: incomplete ({exc!r})"]
    if not auc <= bars.c2st_auc_max:
        out.append(f"c2st_auc: {auc:.4f} > {bars.c2st_auc_max}")
    if not quality >= bars.quality_min:
        out.append(f"sdmetrics overall: {quality:.4f} < {bars.quality_min}")
    if not close < bars.close_fraction_max:
        out.append(f"privacy close_fraction: {close:.4%} >= {bars.close_fraction_max:.0%}")
    return out
