"""The pure parts behind the console: the per-variant ring buffer (`gateway/series.py`) and the
dry run's move count (`router/preview.py`), without servers."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.routes import series_document
from gateway.series import VariantSeries
from router.assign import Router
from router.config import parse_experiment
from router.outcomes import BOUNDS
from router.preview import moves


def _cfg(**weights: float) -> dict:
    return {"name": "e", "model": "m", "salt": "s", "control": "a",
            "variants": [{"name": n, "weight": w, "target": {"model": "clf", "version": str(i + 1)}}
                         for i, (n, w) in enumerate(weights.items())]}


def test_series_points_are_per_second_deltas_and_bounded() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    routes = SimpleNamespace(router=Router.from_configs([parse_experiment(_cfg(a=50, b=50))]))
    series = VariantSeries(metrics, routes, seconds=5)
    series.sample(now=0.0)   # baseline
    exp = routes.router.experiment("e")
    vm = metrics.variant("m", "a")
    for _ in range(7):
        vm.requests.inc()
        exp.outcomes["a"].ok(0.002)
    vm.requests.inc()
    vm.errors["deadline_exceeded"].inc()
    exp.outcomes["a"].failed()
    series.sample(now=1.0)
    (t, point), = series.points("e")
    assert t == 1.0 and point["a"]["requests"] == 8 and point["a"]["errors"] == {"deadline_exceeded": 1}
    assert point["b"] == {"requests": 0, "errors": {}, "latency": {}}
    doc = series_document("e", series, 300, 60)
    a = doc["summary"]["variants"]["a"]
    assert a["requests"] == 8 and a["share"] == 1.0 and a["errors"] == {"deadline_exceeded": 1}
    assert BOUNDS[0] * 1e3 < a["p99_ms"] <= 0.002 * 1e3 * 1.1    # one log bucket above 2 ms at most
    for s in range(2, 12):
        series.sample(now=float(s))
    assert len(series.points("e")) == 5 and series.points("e")[-1][0] == 11.0   # the ring keeps 5


def test_a_weight_change_starts_the_latency_from_the_new_counters() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    routes = SimpleNamespace(router=Router.from_configs([parse_experiment(_cfg(a=50, b=50))]))
    series = VariantSeries(metrics, routes)
    series.sample(now=0.0)
    for _ in range(5):
        routes.router.experiment("e").outcomes["b"].ok(0.001)
    series.sample(now=1.0)
    routes.router = Router.from_configs([parse_experiment(_cfg(a=70, b=30))], previous=routes.router)
    new = routes.router.experiment("e").outcomes["b"]
    new.ok(0.004)   # a fresh counter object: 1 success since the swap
    series.sample(now=2.0)
    lat = series.points("e")[-1][1]["b"]["latency"]
    assert sum(lat.values()) == 1


def test_moves_match_the_documented_three_variant_ramp() -> None:
    # router/README.md: control 70 / t1 10 -> 20 / t2 20, t1 listed first: 1,242 buckets move.
    old = parse_experiment(_cfg(a=70, t1=10, t2=20))
    new = parse_experiment(_cfg(a=60, t1=20, t2=20))
    r = moves(old, new, units_seen=10_000)
    assert r["buckets_moved"] == 1242 and r["units_moved_estimate"] == 1242 and r["confirm"] is True
    assert {(t["from"], t["to"]): t["buckets"] for t in r["transitions"]} == {
        ("a", "t1"): 758, ("t2", "t1"): 242, ("a", "t2"): 242}
    # Ramping the treatment listed last moves exactly the change, all from control.
    last = moves(parse_experiment(_cfg(a=70, t2=20, t1=10)), parse_experiment(_cfg(a=60, t2=20, t1=20)))
    assert last["buckets_moved"] == 1000 and last["confirm"] is False and last["resets_counts"] is True
    # Pausing sends every unit of the treatments to control; the same config moves nothing.
    paused = moves(old, parse_experiment({**_cfg(a=70, t1=10, t2=20), "status": "paused"}))
    assert paused["buckets_moved"] == 3000
    assert moves(old, old)["buckets_moved"] == 0 and moves(old, old)["resets_counts"] is False
