"""Real parts for the lifecycle tests: two Triton replicas on one temp model repository, a
gateway in front of both, MLflow (embedded sqlite, or `mlflow server` over PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from _helpers import TOKEN
from registry.demo import EXPERIMENTS
from tests.conftest import require  # the one rule: fail under CI=true, skip elsewhere
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer, free_port

EXPERIMENT = "clf-demo"
EXPERIMENTS_YAML = EXPERIMENTS   # the demo's experiment: a at 100 %, b at 0 %, guardrails set




@dataclass
class Stack2:
    """Two Tritons sharing a repository and one gateway that sends to both."""

    repository: Path
    tritons: list[TritonServer]
    gateway: GatewayProcess
    env: dict[str, str]   # what a registry CLI needs to reach this gateway

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def stack2(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack2]:
    """A fresh stack per test module: deploys change what Triton holds."""
    base = tmp_path_factory.mktemp("stack2")
    repo = base / "model_repo"
    shutil.copytree(DEFAULT_REPOSITORY, repo)
    (base / "experiments.yaml").write_text(EXPERIMENTS_YAML)
    prefix = f"test-reg-{uuid.uuid4().hex[:8]}:"
    env = {"INFERGATE_REDIS_KEY_PREFIX": prefix, "INFERGATE_ADMIN_TOKENS": f"registry:{TOKEN}"}
    tritons: list[TritonServer] = []
    try:
        for i in range(2):
            tritons.append(TritonServer(triton_runtime, models=["clf"], repository=repo,
                                        log_path=base / f"triton{i}.log").start())
        args = ["--features", "off", "--experiments-file", str(base / "experiments.yaml"),
                "--model-repository", str(repo), "--log-level", "info"]
        for t in tritons[1:]:   # GatewayProcess passes the first one itself
            args += ["--triton-url", t.grpc_url]
        with GatewayProcess(tritons[0].grpc_url, args=args, env=env, log_path=base / "gateway.log") as gw:
            yield Stack2(repo, tritons, gw, env)
    finally:
        for t in tritons:
            t.stop()


@pytest.fixture
def mlflow_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server -w 1` over a PostgreSQL database of its own, dropped afterwards."""
    try:
        import psycopg2
    except ImportError:
        require(False, "psycopg2 is not installed: pip install -e '.[registry]'")
    db = f"infergate_reg_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3)
        admin.autocommit = True
    except psycopg2.OperationalError as exc:
        require(False, f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}")
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = None
    try:
        admin.cursor().execute(f'CREATE DATABASE "{db}"')
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "-w", "1", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
               "--artifacts-destination", str(base / "artifacts")]
        log = open(base / "mlflow.log", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}: {(base / 'mlflow.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server not healthy after 90 s")
            time.sleep(0.2)
        yield url
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()
