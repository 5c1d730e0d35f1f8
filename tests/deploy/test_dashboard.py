"""The Grafana dashboard's structure (no Grafana here to load it; the live test runs its queries)."""

from __future__ import annotations

import json
import re

from deploy.dashboard import build, queries
from deploy.promql import metric_names
from deploy.render import DEPLOY

BUILTINS = {"__rate_interval", "__interval", "__range"}


def test_committed_json_is_the_generated_one() -> None:
    committed = json.loads((DEPLOY / "components" / "monitoring" / "infergate-dashboard.json").read_text())
    assert committed == build()


def test_panels_have_unique_ids_fit_the_grid_and_carry_targets() -> None:
    panels = build()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']!r}: gridPos {g}"
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]


def test_variables_used_are_defined_and_repeats_can_repeat() -> None:
    dash = build()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    text = json.dumps(dash["panels"])
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert used - BUILTINS <= set(variables), f"undefined variables: {sorted(used - BUILTINS - set(variables))}"
    repeats = {p["repeat"] for p in dash["panels"] if p["type"] == "row" and "repeat" in p}
    assert repeats == {"experiment", "model"}
    for name in repeats:
        assert variables[name]["multi"] and variables[name]["includeAll"], f"variable {name} cannot repeat a row"


def test_the_issues_panels_are_there() -> None:
    """Per-variant req/s, p50/p99, errors by reason, batch rows, queue depth, feature-read
    latency, SRM p-value, replica health: each by the metric its query reads."""
    read = set().union(*(metric_names(q) for q in queries()))
    for metric in ("infergate_requests_total", "infergate_request_duration_seconds_bucket", "infergate_errors_total",
                   "infergate_batch_rows_bucket", "infergate_queued_rows", "features_read_seconds_bucket",
                   "router_srm_p_value", "infergate_triton_replica_up"):
        assert metric in read, metric
    exprs = list(queries())
    assert any("histogram_quantile(0.5," in q and "request_duration" in q for q in exprs)
    assert any("histogram_quantile(0.99," in q and "request_duration" in q for q in exprs)
    assert any("by (variant, reason)" in q for q in exprs)
