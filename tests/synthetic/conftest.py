"""Tiny real trainings (seconds) shared by the synthetic tests, and a private MLflow registry."""

from __future__ import annotations

from pathlib import Path

import pytest


from synthetic.datasets import Table, load_dataset  # noqa: E402
from synthetic.train import TrainResult, train  # noqa: E402

from _synthetic_fixture import TINY  # noqa: E402


@pytest.fixture(scope="session")
def tiny_table() -> Table:
    return load_dataset("user_features", rows=3000, holdout=1000, seed=11)


@pytest.fixture(scope="session")
def tiny_run(tiny_table: Table) -> TrainResult:
    return train(tiny_table, TINY, progress=False)


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
