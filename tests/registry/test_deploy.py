"""Register → deploy on two real Triton replicas → promote, through the CLI, under load;
pyfunc answers equal Triton's; a replaced version is unloaded only after drain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers import Load, admin, cli
from conftest import EXPERIMENT


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from registry.train import train
    out = tmp_path_factory.mktemp("trained") / "v"
    metrics = train(out)
    assert metrics["test_accuracy"] > 0.9
    return out


def ready_versions(stack2) -> list[set[str]]:
    import tritonclient.grpc as grpcclient
    out = []
    for t in stack2.tritons:
        with grpcclient.InferenceServerClient(t.grpc_url) as c:
            rows = c.get_model_repository_index(as_json=True)["models"]
            out.append({r["version"] for r in rows if r.get("state") == "READY"})
    return out


def test_register_deploy_promote_without_a_failed_request(stack2, trained, mlflow_sqlite, monkeypatch, capsys):
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    gw = ["--gateway", stack2.url]
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(trained),
                         "--alias", "challenger")
    assert code == 0, err
    version = out.strip()
    assert version == "1"

    assert admin(stack2.url, "/admin/triton")["replicas"] == [
        {"url": t.grpc_url, "up": True} for t in stack2.tritons]
    with Load(stack2.url) as load:
        code, out, err = cli(monkeypatch, capsys, env, "deploy", "--model", "clf", "--alias", "challenger",
                             "--experiment", EXPERIMENT, "--variant", "b", "--weight", "10", "--json", *gw)
        assert code == 0, err
        deployed = json.loads(out)
        tv = deployed["triton_version"]
        assert tv == "3"   # 1 and 2 are model_repo's generated versions
        assert (stack2.repository / "clf" / tv / "model.py").is_file()
        assert all(tv in r for r in ready_versions(stack2))
        state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
        weights = {v["name"]: (v["weight"], v["target"]["version"]) for v in state["config"]["variants"]}
        assert weights == {"a": (90, "1"), "b": (10, tv)}

        # MLflow's pyfunc answers what both Triton replicas answer for the new version.
        import mlflow
        from registry.store import ModelStore
        from registry.triton_control import TritonReplicas
        from registry.signature import Signature
        mlflow.set_registry_uri(mlflow_sqlite)
        model = mlflow.pyfunc.load_model("models:/clf@challenger")
        x = np.random.default_rng(5).standard_normal((33, 20)).astype(np.float32) * 4
        offline = model.predict(x)
        reps = TritonReplicas([t.grpc_url for t in stack2.tritons])
        try:
            online = reps.infer("clf", tv, Signature.for_folder(stack2.repository / "clf" / tv), x)
        finally:
            reps.close()
        assert ModelStore(mlflow_sqlite).resolve("clf", alias="challenger").tags["infergate.triton_version"] == tv
        for url, got in online.items():
            np.testing.assert_allclose(got, offline, rtol=1e-5, atol=1e-6, err_msg=url)

        code, out, err = cli(monkeypatch, capsys, env, "promote", "--model", "clf", "--alias", "challenger",
                             "--experiment", EXPERIMENT, "--json", *gw)
        assert code == 0, err
        promoted = json.loads(out)
        assert promoted["unloaded"] == "1"
    assert load.failures == [] and load.total > 50, (load.statuses, load.failures[:3])
    assert set(load.versions) <= {"1", tv} and load.versions.get(tv, 0) > 0
    state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
    weights = {v["name"]: (v["weight"], v["target"]["version"]) for v in state["config"]["variants"]}
    assert weights == {"a": (100, tv), "b": (0, tv)}
    # version 1 was drained (no batcher left) and unloaded on both replicas
    assert [t for t in admin(stack2.url, "/admin/targets")["targets"] if t["version"] == "1"] == []
    assert all("1" not in r and tv in r for r in ready_versions(stack2))
    code, out, err = cli(monkeypatch, capsys, env, "status", "--model", "clf", "--experiment", EXPERIMENT,
                         "--json", *gw)
    assert code == 0, err
    status = json.loads(out)
    assert status["aliases"] == {"challenger": "1", "champion": "1"}

    # A second version at 20 %, then rolled back: b back on the control's version at 0 %, the
    # version unloaded after drain, its alias left for a person to inspect.
    from registry.train import train
    train(trained.parent / "v2", seed=23, max_iter=20)
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path",
                         str(trained.parent / "v2"), "--alias", "challenger")
    assert code == 0 and out.strip() == "2", err
    with Load(stack2.url) as load2:
        code, out, err = cli(monkeypatch, capsys, env, "deploy", "--model", "clf", "--alias", "challenger",
                             "--experiment", EXPERIMENT, "--variant", "b", "--weight", "20", "--json", *gw)
        assert code == 0, err
        tv2 = json.loads(out)["triton_version"]
        assert tv2 == "4" and all(tv2 in r for r in ready_versions(stack2))
        code, out, err = cli(monkeypatch, capsys, env, "rollback", "--experiment", EXPERIMENT, "--variant", "b",
                             "--json", *gw)
        assert code == 0, err
        assert json.loads(out) == {"experiment": EXPERIMENT, "variant": "b", "changed": True, "unloaded": tv2}
    assert load2.failures == [] and load2.versions.get(tv2, 0) > 0, (load2.statuses, load2.versions)
    state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
    assert {v["name"]: (v["weight"], v["target"]["version"]) for v in state["config"]["variants"]} == {
        "a": (100, tv), "b": (0, tv)}
    assert all(r == {tv} for r in ready_versions(stack2))
    from registry.store import ModelStore
    assert ModelStore(mlflow_sqlite).aliases("clf") == {"challenger": "2", "champion": "1"}
    history = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}/history?limit=1")["history"]
    assert [v["weight"] for v in history[0]["config"]["variants"]] == [100, 0]
    code, out, err = cli(monkeypatch, capsys, env, "rollback", "--experiment", EXPERIMENT, "--variant", "b", *gw)
    assert code == 0 and "already" in out, err
    print(f"\n[deploy] timings {deployed['timings_s']}; load: {load.statuses} versions {load.versions}")
