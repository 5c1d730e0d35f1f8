"""deploy/promql.py: metric names of an expression, and Grafana variables expanded."""

from __future__ import annotations

from deploy.promql import expand, metric_names


def test_names_skip_functions_labels_ranges_grouping_offsets_and_numbers() -> None:
    expr = ('sum by (model, variant) (rate(infergate_errors_total{reason=~"a|b",x="rate(y)"}[5m])) '
            '/ on (model) group_left (variant) histogram_quantile(0.99, sum by (le) (rate(lat_bucket[1m]))) '
            '> 1e-3 or foo offset 15m unless bar_total > bool 0.25 and up{job="j"} == 0')
    assert metric_names(expr) == {"infergate_errors_total", "lat_bucket", "foo", "bar_total", "up"}


def test_names_of_a_bare_metric_and_a_vector_literal() -> None:
    assert metric_names("router_srm_flagged") == {"router_srm_flagged"}
    assert metric_names("sum(rate(x_total[5m])) or vector(0)") == {"x_total"}


def test_expand_replaces_grafana_variables() -> None:
    q = 'rate(m{experiment="$experiment",model="${model}"}[$__rate_interval])'
    assert expand(q, {"experiment": "e1", "model": "clf"}) == 'rate(m{experiment="e1",model="clf"}[1m])'
