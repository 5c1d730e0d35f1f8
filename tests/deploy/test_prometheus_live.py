"""A real Prometheus scrapes a real gateway (with features from Feast-in-Redis, a shadow) and
the real Triton: every metric the alert rules and the dashboard read exists, every dashboard
query returns data, and the SRM alert fires when a skewed split is pushed through the gateway.

The real rules file is loaded unchanged except InfergateSRMFlagged's `for:` (10m -> 2s), with
1 s scrape and evaluation intervals.
"""

from __future__ import annotations

import copy
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import redis
import yaml

from deploy.dashboard import queries
from deploy.promql import expand, metric_names
from deploy.promrule import load_rules
from router.assign import Router
from router.config import load_experiments
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer
from tests.conftest import gateway_env
from tests.deploy.tooling import need
from tests.deploy.prometheus_proc import PrometheusProcess

pytestmark = pytest.mark.timeout(300)

EXPERIMENT = "clf-deploy"
SRM_FOR = "2s"
VARIABLES = {"experiment": EXPERIMENT, "model": "clf"}


def _rule_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in load_rules()["groups"] for r in g["rules"]}


def expected_metrics() -> set[str]:
    """Derived from the rules and the dashboard, never listed by hand."""
    names: set[str] = set()
    for expr in [*_rule_exprs().values(), *(expand(q, VARIABLES) for q in queries())]:
        names |= metric_names(expr)
    return names


def test_expected_metrics_are_derived_from_rules_and_dashboard() -> None:
    names = expected_metrics()
    # a sample of each source, so an extractor that finds nothing cannot pass the live test
    assert {"router_srm_flagged", "infergate_request_duration_seconds_bucket", "features_read_seconds_bucket",
            "infergate_triton_replica_up", "nv_inference_exec_count", "up"} <= names
    assert not names & {"sum", "rate", "by", "le", "histogram_quantile", "offset", "m"}


def _test_rules() -> dict[str, Any]:
    rules = copy.deepcopy(load_rules())
    for g in rules["groups"]:
        for r in g["rules"]:
            if r.get("alert") == "InfergateSRMFlagged":
                r["for"] = SRM_FOR
    return rules


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from features.repo.datagen import generate_frame
    from features.repo.workspace import Workspace

    path = tmp_path_factory.mktemp("deploy_feast")
    project = f"dp_{uuid.uuid4().hex[:8]}"
    ws = Workspace(path, project=project, online="redis")
    try:
        store = ws.apply(generate_frame(50, seed=5))
        ws.materialize(store, slices=1, progress=False)
        yield path
    finally:
        # Feast's keys end with the project name: remove ours from the shared Redis.
        client = redis.Redis.from_url(ws.redis_url)
        keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def experiments_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deploy_exp") / "experiments.yaml"
    path.write_text(yaml.safe_dump({"experiments": [{
        "name": EXPERIMENT, "model": "clf", "salt": "deploy-live-test", "status": "running", "control": "a",
        "variants": [{"name": "a", "weight": 50, "target": {"model": "clf", "version": "1"}},
                     {"name": "b", "weight": 50, "target": {"model": "clf", "version": "2"}}],
        "shadow": {"variant": "c", "share": 50, "target": {"model": "clf", "version": "2"}},
        "guardrails": {"max_error_rate": 0.02, "max_p99_ms": 250},
    }]}))
    return path


@pytest.fixture(scope="module")
def stack(triton: TritonServer, feast_repo: Path, experiments_file: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, PrometheusProcess]]:
    binary = need("prometheus", "`make promtool` (Debian's prometheus package)")
    log = tmp_path_factory.mktemp("deploy_gw") / "gateway.log"
    args = ["--features", "redis", "--feature-repo", str(feast_repo), "--experiments-file", str(experiments_file)]
    prefix = f"test-deploy-{uuid.uuid4().hex[:8]}:"
    try:
        with GatewayProcess(triton.grpc_url, args=args, env=gateway_env(prefix), log_path=log) as gw:
            yield from _with_prometheus(gw, triton, binary, tmp_path_factory)
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _with_prometheus(gw: GatewayProcess, triton: TritonServer, binary: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, PrometheusProcess]]:
    """The jobs of deploy/prometheus/prometheus.yml, with static targets instead of Kubernetes SD."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "infergate-gateway", "static_configs": [{"targets": [gw.url.removeprefix("http://")]}]},
            {"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{triton.metrics_port}"]}]},
        ],
    }
    with PrometheusProcess(binary, tmp_path_factory.mktemp("deploy_prom"), config, _test_rules()) as prom:
        yield gw, prom


def _send(gw: GatewayProcess, units: list[str]) -> None:
    with httpx.Client(base_url=gw.url, timeout=10.0) as client:
        for i, unit in enumerate(units):
            # A generous deadline: on 2 shared cores a request can wait, and every one must count.
            r = client.post("/v1/infer", json={"model": "clf", "unit_id": unit, "entity": {"user_id": i % 60},
                                               "inputs": [0.5, -1.0, 0.25, 2.0]},
                            headers={"x-request-timeout-ms": "5000"})
            assert r.status_code == 200, r.text


def _wait(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def balanced(stack: tuple[GatewayProcess, PrometheusProcess]) -> tuple[GatewayProcess, PrometheusProcess]:
    """200 units hashed by the router (a fair 50/50 split), scraped for a few seconds."""
    gw, prom = stack
    _send(gw, [f"unit-{i}" for i in range(200)])
    _wait("the SRM gauge scraped", lambda: prom.query(f'router_srm_p_value{{experiment="{EXPERIMENT}"}}'))
    time.sleep(3)   # a few more scrapes, so rate() over them has points
    return gw, prom


def test_every_metric_the_rules_and_dashboard_read_exists(balanced: tuple) -> None:
    _, prom = balanced
    want = expected_metrics()
    missing = want - _wait("a scrape", prom.names)
    assert not missing, f"queried by the rules or the dashboard but not in the scrape: {sorted(missing)}"


def test_every_dashboard_query_returns_data(balanced: tuple) -> None:
    _, prom = balanced
    empty = [q for q in queries() if not prom.query(expand(q, VARIABLES))]
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)


def test_srm_alert_fires_on_a_skewed_split(balanced: tuple) -> None:
    gw, prom = balanced
    assert prom.query(f'router_srm_flagged{{experiment="{EXPERIMENT}"}} == 0'), "the fair split is already flagged"
    assert not prom.alerts("InfergateSRMFlagged"), prom.alerts("InfergateSRMFlagged")
    # Units the router (same config, same salt) sends to control: a 50/50 experiment that sees
    # 400 more exposures of a than of b is a sample-ratio mismatch.
    router = Router.from_configs(load_experiments(_experiments_path(gw)))
    skewed = [u for u in (f"skew-{i}" for i in range(2000)) if router.assign("clf", u).variant == "a"][:400]
    assert len(skewed) == 400
    t0 = time.monotonic()
    _send(gw, skewed)
    sent_s = time.monotonic() - t0
    firing = _wait("InfergateSRMFlagged firing",
                   lambda: [a for a in prom.alerts("InfergateSRMFlagged") if a["state"] == "firing"])
    fired_s = time.monotonic() - t0
    assert firing[0]["labels"] == {"alertname": "InfergateSRMFlagged", "experiment": EXPERIMENT, "severity": "ticket"}
    assert firing[0]["annotations"]["runbook"] == "deploy/README.md#infergatesrmflagged"
    p = float(prom.query(f'min(router_srm_p_value{{experiment="{EXPERIMENT}"}})')[0]["value"][1])
    assert p < 0.001
    if os.environ.get("DEPLOY_REPORT"):
        print(f"\nSRM: 400 skewed requests sent in {sent_s:.2f} s; alert firing {fired_s:.2f} s after the first "
              f"(for: {SRM_FOR}, 1 s scrape/evaluation); p-value {p:.3g}")


def _experiments_path(gw: GatewayProcess) -> str:
    i = list(gw.args).index("--experiments-file")
    return list(gw.args)[i + 1]
