"""A rollout through 10 → 50 → 100 % under load ends promoted with no failed request; the
registry also works against `mlflow server` over PostgreSQL."""

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
    train(out, seed=5, max_iter=30)
    return out


def test_rollout_over_mlflow_server_on_postgres_promotes_without_a_failed_request(
        stack2, trained, mlflow_server, monkeypatch, capsys):
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_server}
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(trained),
                         "--alias", "challenger", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == "1"
    with Load(stack2.url) as load:
        code, out, err = cli(monkeypatch, capsys, env, "rollout", "--model", "clf", "--alias", "challenger",
                             "--experiment", EXPERIMENT, "--variant", "b", "--plan", "10,50,100", "--hold", "1.5",
                             "--gateway", stack2.url, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    steps = [r for r in rows[:-1] if isinstance(r.get("step"), int)]
    assert [s["weights"] for s in steps] == [{"a": 90, "b": 10}, {"a": 50, "b": 50}, {"a": 0, "b": 100}]
    assert all(s["guardrails"] in ("off", "ok", "insufficient_data") for s in steps)
    assert all(f["errors"] == 0 for s in steps for f in s["variants"].values())
    assert steps[-1]["variants"]["b"]["requests"] > 0
    assert rows[-1]["step"] == "promote" and rows[-1]["alias"] == "champion"
    tv = rows[-1]["triton_version"]
    assert load.failures == [] and load.total > 50, (load.statuses, load.failures[:3])
    state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
    assert {v["name"]: (v["weight"], v["target"]["version"]) for v in state["config"]["variants"]} == {
        "a": (100, tv), "b": (0, tv)}
    history = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}/history?limit=10")["history"]
    assert len(history) >= 4   # deploy at 10, 50, 100, promote

    # The store of record is the server: the pyfunc loads from it and agrees with Triton.
    import mlflow
    from registry.signature import Signature
    from registry.triton_control import TritonReplicas
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/clf@champion")
    x = np.random.default_rng(9).standard_normal((17, 20)).astype(np.float32)
    reps = TritonReplicas([t.grpc_url for t in stack2.tritons])
    try:
        online = reps.infer("clf", tv, Signature.for_folder(stack2.repository / "clf" / tv), x)
    finally:
        reps.close()
    for url, got in online.items():
        np.testing.assert_allclose(got, model.predict(x), rtol=1e-5, atol=1e-6, err_msg=url)
    print("\n" + "\n".join(json.dumps(r) for r in rows))
