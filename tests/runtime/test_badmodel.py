"""runtime/badmodel.py: writes a wrapped copy of a version; bad arguments exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.badmodel import main
from runtime.triton import DEFAULT_REPOSITORY


def test_writes_a_wrapped_copy_and_refuses_bad_input(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "models"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    assert main(["--repo", str(repo), "--version", "7", "--fail-share", "0.25", "--slow-ms", "5"]) == 0
    v7 = repo / "clf" / "7"
    assert (v7 / "weights.npz").read_bytes() == (repo / "clf" / "2" / "weights.npz").read_bytes()
    assert (v7 / "good_model.py").read_text() == (repo / "clf" / "2" / "model.py").read_text()
    code = (v7 / "model.py").read_text()
    assert "THRESHOLD = 0.674" in code and "SLOW_S = 0.005" in code  # N(0,1) quantile 0.75
    compile(code, "model.py", "exec")
    for argv in (["--version", "7"], ["--fail-share", "1.5", "--version", "8"], ["--from-version", "9", "--version", "8"]):
        assert main(["--repo", str(repo), *argv]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "fail_share" in err and "no such model version" in err
    assert not (repo / "clf" / "8").exists()
