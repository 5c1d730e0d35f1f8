"""The Grafana dashboard, built from code so every query is in one reviewable place.

Rows: one per experiment (repeated over ``$experiment``: SRM, exposures, guardrails), one per
model (repeated over ``$model``: per-variant req/s, p50/p99, errors by reason, stage latency),
then the shared gateway (shedding, batches, queue depth), features and Triton rows.
Gateway metrics carry ``model`` and ``variant``, not ``experiment`` (one experiment per model),
so the traffic panels repeat per model and the experiment panels per experiment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["Panel", "Row", "ROWS", "build", "render", "queries"]

UID = "infergate-overview"
RATE = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]      # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    description: str = ""
    thresholds: tuple[tuple[str, float | None], ...] = ()
    log_scale: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]
    repeat: str | None = None
    description: str = field(default="", compare=False)


def _q(h: float, metric: str, by: str, matcher: str = "") -> str:
    return f"histogram_quantile({h}, sum by ({by}, le) (rate({metric}_bucket{matcher}[{RATE}])))"


EXP = '{experiment="$experiment"}'
MODEL = '{model="$model"}'
SERVER_ERRORS = "internal|unavailable|model_unavailable|features_unavailable|deadline_exceeded|shutting_down"

ROWS: tuple[Row, ...] = (
    Row("Experiment $experiment", repeat="experiment", panels=(
        Panel("SRM p-value", ((f"min by (experiment) (router_srm_p_value{EXP})", "p-value"),),
              unit="none", log_scale=True, thresholds=(("green", None), ("red", 0.001)),
              description="Chi-square p-value of exposures against the configured weights; "
                          "flagged below 0.001 (alert InfergateSRMFlagged)."),
        Panel("SRM flagged", ((f"max by (experiment) (router_srm_flagged{EXP})", "flagged"),),
              kind="stat", width=4, thresholds=(("green", None), ("red", 1))),
        Panel("Exposures by variant (current allocation)",
              ((f"max by (variant) (router_exposures{EXP})", "{{variant}}"),), width=6),
        Panel("Guardrail breached", ((f"max by (variant) (router_guardrail_breached{EXP})", "{{variant}}"),),
              kind="stat", width=3, thresholds=(("green", None), ("red", 1))),
        Panel("Rollbacks (24 h)",
              ((f"sum by (variant) (increase(router_guardrail_rollbacks_total{EXP}[24h]))", "{{variant}}"),),
              kind="stat", width=3, thresholds=(("green", None), ("red", 1))),
    )),
    Row("Model $model: variants", repeat="model", panels=(
        Panel("Requests/s by variant",
              ((f"sum by (variant) (rate(infergate_requests_total{MODEL}[{RATE}]))", "{{variant}}"),),
              unit="reqps"),
        Panel("Latency p50 / p99 by variant", (
            (_q(0.5, "infergate_request_duration_seconds", "variant", MODEL), "p50 {{variant}}"),
            (_q(0.99, "infergate_request_duration_seconds", "variant", MODEL), "p99 {{variant}}"),
        ), unit="s"),
        Panel("Errors/s by variant and reason",
              ((f"sum by (variant, reason) (rate(infergate_errors_total{MODEL}[{RATE}]))",
                "{{variant}} {{reason}}"),), unit="reqps"),
        Panel("Server error ratio by variant", ((
            f'sum by (variant) (rate(infergate_errors_total{{model="$model",reason=~"{SERVER_ERRORS}"}}[{RATE}]))'
            f" / sum by (variant) (rate(infergate_requests_total{MODEL}[{RATE}]))", "{{variant}}"),),
              unit="percentunit", thresholds=(("green", None), ("red", 0.02))),
        Panel("Stage p99 (features, queue, inference)",
              ((_q(0.99, "infergate_stage_duration_seconds", "variant, stage", MODEL), "{{variant}} {{stage}}"),),
              unit="s"),
        Panel("Shadow p99 and prediction diff p99", (
            (_q(0.99, "router_shadow_latency_seconds", "variant"), "latency {{variant}}"),
            (_q(0.99, "router_shadow_prediction_diff", "variant"), "diff {{variant}}"),
        )),
    )),
    Row("Gateway: shedding, batching, queues", panels=(
        Panel("Shed (429) and refused requests/s by reason", (
            (f"sum by (reason) (rate(infergate_rejected_total[{RATE}]))", "refused {{reason}}"),
            (f'sum (rate(infergate_errors_total{{reason="overloaded"}}[{RATE}]))', "queue full"),
        ), unit="reqps"),
        Panel("In flight", (("sum (infergate_in_flight_requests)", "requests"),)),
        Panel("Queued rows by target", (("sum by (target) (infergate_queued_rows)", "{{target}}"),)),
        Panel("Batch rows p50 / p99 by target", (
            (_q(0.5, "infergate_batch_rows", "target"), "p50 {{target}}"),
            (_q(0.99, "infergate_batch_rows", "target"), "p99 {{target}}"),
        )),
        Panel("Requests per Triton call (mean)", ((
            f"sum by (target) (rate(infergate_batch_requests_sum[{RATE}]))"
            f" / sum by (target) (rate(infergate_batch_requests_count[{RATE}]))", "{{target}}"),)),
        Panel("Shadow calls dropped/s", ((f"sum (rate(infergate_shadow_dropped_total[{RATE}]))", "dropped"),),
              unit="reqps"),
    )),
    Row("Features", panels=(
        Panel("Feature read p50 / p99", (
            (_q(0.5, "features_read_seconds", "store, view"), "p50 {{store}}/{{view}}"),
            (_q(0.99, "features_read_seconds", "store, view"), "p99 {{store}}/{{view}}"),
        ), unit="s"),
        Panel("Store errors/s by reason",
              ((f"sum by (reason) (rate(features_store_errors_total[{RATE}]))", "{{reason}}"),), unit="reqps",
              description="circuit_open: reads refused while the circuit is open (alert InfergateFeatureCircuitOpen)."),
        Panel("Missing entities, nulls, defaulted rows /s", (
            (f"sum (rate(features_missing_entities_total[{RATE}]))", "missing entities"),
            (f"sum (rate(features_null_values_total[{RATE}]))", "null values"),
            (f"sum (rate(features_defaulted_rows_total[{RATE}]))", "defaulted rows"),
        )),
    )),
    Row("Triton replicas", panels=(
        Panel("Replica up (min over gateway pods)",
              (("min by (replica) (infergate_triton_replica_up)", "{{replica}}"),),
              thresholds=(("red", None), ("green", 1))),
        Panel("Retries and ejections/s", (
            (f"sum (rate(infergate_triton_retries_total[{RATE}]))", "retries"),
            (f"sum by (replica) (rate(infergate_triton_ejections_total[{RATE}]))", "ejections {{replica}}"),
        )),
        Panel("Triton: requests/s and rows per execution", (
            (f"sum by (model, version) (rate(nv_inference_request_success[{RATE}]))", "req/s {{model}} v{{version}}"),
            (f"sum by (model, version) (rate(nv_inference_count[{RATE}]))"
             f" / sum by (model, version) (rate(nv_inference_exec_count[{RATE}]))", "rows/exec {{model}} v{{version}}"),
        )),
    )),
)


def queries(rows: tuple[Row, ...] = ROWS) -> Iterator[str]:
    for row in rows:
        for panel in row.panels:
            for expr, _ in panel.exprs:
                yield expr


def _variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "current": {"selected": True, "text": ["All"],
                                                                    "value": ["$__all"]},
        "sort": 1,
    }


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"datasource": DATASOURCE, "expr": e, "legendFormat": legend, "refId": chr(ord("A") + i)}
               for i, (e, legend) in enumerate(p.exprs)]
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.thresholds:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"color": c, "value": v} for c, v in p.thresholds]}
    if p.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never",
                              "scaleDistribution": {"type": "log", "log": 10} if p.log_scale else {"type": "linear"}}
    return {"id": pid, "type": p.kind, "title": p.title, "description": p.description,
            "datasource": DATASOURCE, "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "targets": targets,
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}} if p.kind == "timeseries" else {}}


def build(rows: tuple[Row, ...] = ROWS) -> dict[str, Any]:
    """The dashboard JSON model (Grafana 10/11, schemaVersion 39)."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, **({"repeat": row.repeat} if row.repeat else {})})
        pid, y, x = pid + 1, y + 1, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(p, pid, x, y))
            pid, x = pid + 1, x + p.width
        y += 8
    return {
        "uid": UID, "title": "infergate", "tags": ["infergate"], "editable": True, "schemaVersion": 39,
        "version": 1, "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "utc",
        "graphTooltip": 1, "annotations": {"list": []}, "links": [], "panels": panels,
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            _variable("experiment", "label_values(router_config_version, experiment)", "Experiment"),
            _variable("model", "label_values(infergate_requests_total, model)", "Model"),
        ]},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"
