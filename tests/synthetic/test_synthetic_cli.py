"""``python -m synthetic``: a tiny version trained, registered in a private MLflow, and refused
by the gate; every bad input exits 2 with the field or check named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY_ARGS = ["--rows", "3000", "--holdout", "1000", "--steps", "10", "--hidden", "32", "--noise-dim", "16",
             "--batch", "128", "--eval-every", "0", "--threads", "1"]


def test_tiny_version_is_registered_and_the_gate_refuses_it(mlflow_uri, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--mlflow-uri", mlflow_uri, "train", *TINY_ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "registered synthetic-user_features version 1" in printed
    assert "gate: FAILED" in printed
    assert {p.name for p in (out / "plots").iterdir()} == {"marginals.png", "correlations.png"}
    assert (out / "plots" / "marginals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["--mlflow-uri", mlflow_uri, "publish", "--version", "1"]) == 2
    err = capsys.readouterr().err
    assert "publish refused" in err and "c2st_auc: " in err and "> 0.85" in err

    assert main(["--mlflow-uri", mlflow_uri, "report", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["aliases"] == []
    rep = doc["report"]
    assert rep["gate"]["passed"] is False and rep["c2st_auc"] > 0.85
    assert set(rep["sdmetrics"]) >= {"overall", "column_shapes", "column_pair_trends", "columns"}
    assert 0 <= rep["privacy"]["close_fraction"] <= 1

    assert main(["--mlflow-uri", mlflow_uri, "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["dataset"], r["version"], r["gate"]) for r in rows] == [("user_features", 1, "failed")]

    # Nothing is published: sampling "the published version" is refused, an explicit one works.
    assert main(["--mlflow-uri", mlflow_uri, "sample", "--rows", "5", "--seed", "1"]) == 2
    assert "no alias 'published'" in capsys.readouterr().err
    assert main(["--mlflow-uri", mlflow_uri, "sample", "--version", "1", "--rows", "5", "--seed", "1"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert len(csv) == 6 and csv[0].startswith("account_age_days,")


def test_constant_column_is_reproduced(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 1500
    x = rng.standard_normal(n)
    frame = pd.DataFrame({"x": x, "y": 2 * x + rng.standard_normal(n), "const": np.full(n, 3.0),
                          "gaps": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(size=n))})
    table = tmp_path / "t.parquet"
    frame.to_parquet(table)
    out = tmp_path / "out"
    assert main(["train", "--dataset", "tbl", "--table", str(table), "--holdout", "500", *TINY_ARGS[4:],
                 "--out", str(out), "--no-register"]) == 0
    capsys.readouterr()
    assert main(["sample", "--export", str(out), "--rows", "4000", "--seed", "2", "--format", "parquet",
                 "--out", str(tmp_path / "s.parquet")]) == 0
    got = pd.read_parquet(tmp_path / "s.parquet")
    assert list(got.columns) == ["x", "y", "const", "gaps"]
    assert (got["const"] == 3.0).all()
    assert not got[["x", "y", "const"]].isna().any().any()
    assert 0.05 < got["gaps"].isna().mean() < 0.15


@pytest.mark.parametrize("argv, message", [
    (["sample", "--export", "X", "--rows", "0", "--seed", "1"], "rows: must be in 1.."),
    (["sample", "--export", "X", "--rows", "99999999", "--seed", "1"], "rows: must be in 1.."),
    (["sample", "--export", "/nonexistent", "--rows", "5", "--seed", "1"], "export: /nonexistent holds no"),
    (["report", "--dataset", "nope"], "no versions of 'nope'"),
    (["report", "--dataset", "it's"], "dataset: \"it's\" must match"),
    (["train", "--dataset", "other"], "dataset: 'other' is not built in"),
    (["train", "--steps", "0"], "steps: must be positive"),
    (["train", "--no-register"], "--no-register: needs --out"),
    (["import", "/nonexistent"], "directory: /nonexistent holds no generator.json"),
])
def test_bad_input_exits_2_naming_the_field(argv, message, mlflow_uri, tmp_path, capsys):
    argv = [a.replace("X", str(tmp_path)) if a == "X" else a for a in argv]
    assert main(["--mlflow-uri", mlflow_uri, *argv]) == 2
    assert message in capsys.readouterr().err


def test_all_null_column_refused_naming_it(tmp_path, capsys):
    frame = pd.DataFrame({"x": np.arange(100.0), "empty": np.full(100, np.nan)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert main(["train", "--dataset", "t", "--table", str(tmp_path / "t.csv"), "--holdout", "20",
                 "--no-register", "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "empty: every value is null" in capsys.readouterr().err


def test_non_integer_seed_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "synthetic", "sample", "--rows", "5", "--seed", "1.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--seed: invalid int value: '1.5'" in proc.stderr
