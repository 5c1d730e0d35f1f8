"""Real runs of the pipelines with kfp.local (SubprocessRunner, no venv): a private work dir
holds the Feast repo (sqlite online store) and the MLflow sqlite store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest

from features.repo.datagen import generate_frame
from pipelines.cli import run_pipeline
from pipelines.steps import ACCEPTED, EXPERIMENT

pytestmark = pytest.mark.timeout(600)   # whole pipelines: minutes on a loaded 2-core VM


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _ok(res: dict) -> dict:
    assert res["status"] == "SUCCESS", json.dumps(res, indent=1)[-3000:]
    return {t["task"]: t.get("result") for t in res["tasks"]}


@pytest.fixture(scope="module")
def featured(workdir: Path, redis_url: str) -> Path:
    res = run_pipeline("features", {"rows": 3000, "sample": 60}, workdir, redis_url=redis_url)
    out = _ok(res)
    assert [t["task"] for t in res["tasks"]] == ["load-source", "validate", "apply-materialize", "check-online"]
    assert out["check-online"]["sampled"] == 60 and out["check-online"]["mismatches"] == 0
    assert (workdir / ACCEPTED).is_file()
    return workdir


def test_a_drifted_source_stops_at_validation_and_writes_nothing(featured: Path, redis_url: str,
                                                                  tmp_path: Path) -> None:
    accepted, registry = featured / ACCEPTED, featured / "feast" / "registry.db"
    before = (_digest(accepted), _digest(registry))
    bad = generate_frame(3000, 99)
    bad["spend_30d"] *= 5
    bad.loc[:200, "ctr_7d"] = 2.0
    src = tmp_path / "drifted.parquet"
    bad.to_parquet(src, index=False)
    res = run_pipeline("features", {"source": str(src)}, featured, redis_url=redis_url)
    assert res["status"] == "FAILURE" and res["failed_task"] == "validate", res
    assert "spend_30d: drift" in res["error"] and "ctr_7d: range" in res["error"], res["error"]
    assert [t["task"] for t in res["tasks"]] == ["load-source", "validate"]
    assert (_digest(accepted), _digest(registry)) == before   # nothing downstream written
    report = json.loads((featured / "validation.json").read_text())
    assert {f["column"] for f in report["failures"]} == {"spend_30d", "ctr_7d"}


def test_a_missing_source_file_is_named(featured: Path, redis_url: str, tmp_path: Path) -> None:
    res = run_pipeline("features", {"source": str(tmp_path / "nope.parquet")}, featured, redis_url=redis_url)
    assert res["failed_task"] == "load-source" and "nope.parquet is not a file" in res["error"]


def test_train_registers_a_better_model_only(featured: Path, redis_url: str) -> None:
    out = _ok(run_pipeline("train", {}, featured, redis_url=redis_url))["evaluate-register"]
    # The champion is the demo's random-weight version; the trained model must beat it.
    assert out["champion_seeded_from_demo"] and out["champion_version"] == "1"
    assert out["new"]["accuracy"] > 0.9 > out["champion"]["accuracy"] + 0.5
    assert out["registered"] == {"version": "2", "alias": "challenger"}
    uri = f"sqlite:///{featured / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    aliases = {k: str(v) for k, v in client.get_registered_model("clf").aliases.items()}
    assert aliases == {"champion": "1", "challenger": "2"}
    run = client.get_run(out["mlflow_run"])
    assert run.data.metrics["holdout_accuracy"] == pytest.approx(out["new"]["accuracy"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion.png", "vs_champion.png", "evaluation.json", "model"} <= arts, arts

    # An impossible margin: logged, not registered.
    out2 = _ok(run_pipeline("train", {"margin": 1.0}, featured, redis_url=redis_url))["evaluate-register"]
    assert out2["registered"] is None and out2["champion_seeded_from_demo"] is False
    assert len(client.search_model_versions("name='clf'")) == 2
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                              "tags.registered LIKE 'no%'")
    assert len(runs) == 1


def test_synthetic_trains_gates_and_publishes_nothing_that_fails(featured: Path, redis_url: str) -> None:
    res = run_pipeline("synthetic", {"steps": 30, "hidden": 32, "holdout": 500, "rows": 100}, featured,
                       redis_url=redis_url)
    out = _ok(res)
    gate = out["gate-publish"]
    # 30 steps cannot pass the gate: the version is registered, not published, and says why.
    assert gate["published"] is False and not gate["gate"]["passed"] and "c2st_auc" in gate["reason"]
    res = run_pipeline("synthetic", {"steps": 30, "hidden": 32, "holdout": 500, "rows": 100,
                                     "require_gate": True}, featured, redis_url=redis_url)
    assert res["failed_task"] == "gate-publish" and "fails the gate" in res["error"], res


@pytest.mark.parametrize("params, says", [
    ({"gateway": "http://127.0.0.1:9"}, "gateway at http://127.0.0.1:9 unreachable"),
    ({"redis_url": "redis://127.0.0.1:9/0", "gateway": "http://127.0.0.1:9"}, "Redis at redis://127.0.0.1:9/0 unreachable"),
    ({"mlflow_uri": "http://127.0.0.1:9", "gateway": "http://127.0.0.1:9"}, "MLflow at http://127.0.0.1:9 unreachable"),
])
def test_a_missing_service_is_named_by_the_first_step(tmp_path: Path, redis_url: str, params: dict,
                                                      says: str) -> None:
    res = run_pipeline("rollout", params, tmp_path, redis_url=redis_url)
    assert res["status"] == "FAILURE" and res["failed_task"] == "preflight", res
    assert says in res["error"], res["error"]
    assert [t["task"] for t in res["tasks"]] == ["preflight"]
