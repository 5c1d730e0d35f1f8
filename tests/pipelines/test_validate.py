"""The source table checks: each failure names its column."""

from __future__ import annotations

import numpy as np

from features.repo.datagen import generate_frame
from pipelines.validate import Limits, summary, validate


def test_a_fresh_table_passes_against_another_seed() -> None:
    rep = validate(generate_frame(3000, 1), generate_frame(3000, 2))
    assert rep["passed"], summary(rep)
    assert max(c["psi"] for c in rep["columns"].values()) < 0.05


def test_each_failure_names_its_column() -> None:
    ref = generate_frame(3000, 1)
    bad = generate_frame(3000, 2).drop(columns=["clicks_7d"])
    bad["spend_30d"] *= 4                      # drift
    bad.loc[:100, "churn_risk"] = 1.5          # out of range
    bad.loc[:600, "avg_order_value"] = np.nan  # 20 % nulls
    bad.loc[:3, "sessions_7d"] = np.nan        # nulls where none are allowed
    rep = validate(bad, ref, Limits())
    assert not rep["passed"]
    got = {(f["column"], f["check"]) for f in rep["failures"]}
    assert got == {("clicks_7d", "schema"), ("spend_30d", "drift"), ("churn_risk", "range"),
                   ("avg_order_value", "nulls"), ("sessions_7d", "nulls")}, got
    text = summary(rep)
    for col in ("clicks_7d", "spend_30d", "churn_risk", "avg_order_value", "sessions_7d"):
        assert col in text


def test_wrong_types_and_too_few_rows() -> None:
    f = generate_frame(50, 1)
    f["user_id"] = f["user_id"].astype(str)
    f["event_timestamp"] = "yesterday"
    f["refund_rate"] = "high"
    rep = validate(f, None)
    got = {(x["column"], x["check"]) for x in rep["failures"]}
    assert {("*", "rows"), ("user_id", "schema"), ("event_timestamp", "schema"), ("refund_rate", "schema")} <= got
