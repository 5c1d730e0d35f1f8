"""Where the registry lives: one convention shared with the other MLflow users of the repo.

`INFERGATE_MLFLOW_URI` names the tracking + registry store; the default is an embedded sqlite
database in the git-ignored `<repo>/.mlflow/`, artifacts beside it. `http://…` means an
`mlflow server` (e.g. over PostgreSQL, see registry/server.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_URI_ENV = "INFERGATE_MLFLOW_URI"
MLFLOW_DIR = ROOT / ".mlflow"
EXPERIMENT = "infergate-registry"   # the MLflow experiment that holds the logging runs


def mlflow_uri(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(MLFLOW_URI_ENV) or f"sqlite:///{MLFLOW_DIR / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local store go beside its database; a server decides for itself."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "artifacts")
    return str(MLFLOW_DIR / "artifacts")


def quiet_mlflow(environ: dict[str, str] | None = None) -> None:
    """A CLI must fail fast: MLflow's HTTP client retries for minutes by default. Its advice
    on type hints and input examples is noise for an operator."""
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")
    env = os.environ if environ is None else environ
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
