"""Bad input gets a clear error (exit 2, the field named) and changes nothing; outages of
MLflow leave the gateway serving; a second rollout of one experiment is refused."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from _helpers import Load, admin, cli
from conftest import EXPERIMENT
from runtime.triton import free_port


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from registry.train import train
    out = tmp_path_factory.mktemp("good") / "v"
    train(out, max_iter=10)
    return out


def snapshot(stack2) -> tuple:
    """What a refused command must leave alone: the stored experiment and the repository."""
    state = admin(stack2.url, f"/admin/experiments/{EXPERIMENT}")
    return state["version"], state["config"], sorted(p.name for p in (stack2.repository / "clf").iterdir())


def test_unknown_model_alias_version_and_bad_flags(stack2, good, mlflow_sqlite, monkeypatch, capsys):
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    gw = ["--gateway", stack2.url]
    before = snapshot(stack2)
    assert cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(good))[0] == 0
    dep = ["--experiment", EXPERIMENT, "--variant", "b", "--weight", "10", *gw]
    cases = [
        (["deploy", "--model", "nope", "--version", "1", *dep], "'nope'"),
        (["deploy", "--model", "clf", "--alias", "missing", *dep], "missing"),
        (["deploy", "--model", "clf", "--version", "99", *dep], "99"),
        (["deploy", "--model", "clf", "--version", "1", "--experiment", "no-such-exp", "--variant", "b",
          "--weight", "10", *gw], "no-such-exp"),
        (["deploy", "--model", "clf", "--version", "1", "--experiment", EXPERIMENT, "--variant", "zz",
          "--weight", "10", *gw], "--variant"),
        (["deploy", "--model", "clf", "--version", "1", "--experiment", EXPERIMENT, "--variant", "b",
          "--weight", "150", *gw], "--weight"),
        (["deploy", "--model", "clf", "--version", "1", "--experiment", EXPERIMENT, "--variant", "a",
          "--weight", "10", *gw], "control"),
        (["rollout", "--model", "clf", "--version", "1", "--experiment", EXPERIMENT, "--plan", "50,10", *gw],
         "--plan"),
        (["register", "--model", "clf", "--path", str(good.parent / "absent")], "--path"),
    ]
    for argv, needle in cases:
        code, out, err = cli(monkeypatch, capsys, env, *argv)
        assert code == 2, (argv, code, err)
        assert err.startswith("error: ") and needle in err, (argv, err)
        assert "Traceback" not in err
    code, out, err = cli(monkeypatch, capsys, {**env, "INFERGATE_ADMIN_TOKENS": ""},
                         "deploy", "--model", "clf", "--version", "1", *dep)
    assert code == 2 and "INFERGATE_ADMIN_TOKENS" in err
    with pytest.raises(SystemExit) as exc:   # argparse: a missing required flag
        cli(monkeypatch, capsys, env, "deploy", "--model", "clf")
    assert exc.value.code == 2
    assert snapshot(stack2) == before


def test_signature_that_does_not_fit_is_refused_naming_the_field(stack2, good, mlflow_sqlite, monkeypatch,
                                                                 capsys, tmp_path):
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    bad = tmp_path / "narrow"
    shutil.copytree(good, bad)
    sig = json.loads((bad / "signature.json").read_text())
    sig["inputs"][0]["dims"] = [16]
    (bad / "signature.json").write_text(json.dumps(sig))
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(bad))
    assert code == 0, err
    before = snapshot(stack2)
    code, out, err = cli(monkeypatch, capsys, env, "deploy", "--model", "clf", "--version", out.strip(),
                         "--experiment", EXPERIMENT, "--variant", "b", "--weight", "10", "--gateway", stack2.url)
    assert code == 2, err
    assert "signature.inputs[0].dims" in err and "[16]" in err and "[20]" in err, err
    assert snapshot(stack2) == before


def test_version_failing_to_load_in_triton_aborts_and_old_keeps_serving(stack2, good, mlflow_sqlite,
                                                                        monkeypatch, capsys, tmp_path):
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    bad = tmp_path / "broken"
    shutil.copytree(good, bad)
    src = (bad / "model.py").read_text()
    # Fails inside Triton only (Triton passes model_instance_kind; MLflow's pyfunc does not), the
    # way a model fails on a device it was not tested on.
    src = src.replace("    def initialize(self, args):\n",
                      "    def initialize(self, args):\n        if args.get('model_instance_kind'):\n"
                      "            raise RuntimeError('broken on purpose in Triton')\n", 1)
    (bad / "model.py").write_text(src)
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(bad),
                         "--alias", "broken")
    assert code == 0, err
    before = snapshot(stack2)
    with Load(stack2.url) as load:
        code, out, err = cli(monkeypatch, capsys, env, "deploy", "--model", "clf", "--alias", "broken",
                             "--experiment", EXPERIMENT, "--variant", "b", "--weight", "10",
                             "--gateway", stack2.url)
    assert code == 2, err
    assert "broken on purpose" in err and "load clf" in err, err
    assert snapshot(stack2) == before       # no version folder left, experiment untouched
    assert load.failures == [] and load.total > 20, (load.statuses, load.failures[:3])


def test_mlflow_unreachable_fails_clearly_and_the_gateway_keeps_serving(stack2, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    before = snapshot(stack2)
    with Load(stack2.url) as load:
        t0 = time.monotonic()
        code, out, err = cli(monkeypatch, capsys, {**stack2.env, "INFERGATE_MLFLOW_URI": dead},
                             "deploy", "--model", "clf", "--alias", "challenger", "--experiment", EXPERIMENT,
                             "--variant", "b", "--weight", "10", "--gateway", stack2.url)
        took = time.monotonic() - t0
        code_pg, _, err_pg = cli(monkeypatch, capsys, stack2.env, "--mlflow-uri",
                                 f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none",
                                 "status", "--model", "clf")
    assert code == 1 and "unreachable" in err and dead in err, err
    assert took < 30, took
    assert code_pg == 1 and "unreachable" in err_pg and "Traceback" not in err_pg, err_pg
    assert load.failures == [] and load.total > 20
    assert snapshot(stack2) == before


def test_second_rollout_of_one_experiment_is_refused(stack2, good, mlflow_sqlite, monkeypatch, capsys):
    from registry.rollout import RolloutLock
    env = {**stack2.env, "INFERGATE_MLFLOW_URI": mlflow_sqlite}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = cli(monkeypatch, capsys, env, "register", "--model", "clf", "--path", str(good))
    before = snapshot(stack2)
    with RolloutLock(EXPERIMENT, ttl_s=30) as held:
        code, out, err = cli(monkeypatch, capsys, env, "rollout", "--model", "clf", "--version", out.strip(),
                             "--experiment", EXPERIMENT, "--plan", "10,100", "--hold", "1",
                             "--gateway", stack2.url)
        assert code == 4, err
        assert "another rollout" in err and held.key in err
    assert snapshot(stack2) == before
