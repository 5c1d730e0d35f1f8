"""Shared fixtures: a real Triton for the session and gateways in front of it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator, NoReturn

import pytest

from runtime.stack import GatewayProcess
from runtime.triton import TritonRuntime, TritonServer


CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(what: str) -> NoReturn:
    """A service or tool the test needs is not there: skip on a workstation, FAIL under
    `CI=true` (a CI run that skipped its Redis tests would pass without testing anything)."""
    if CI:
        pytest.fail(f"{what} (CI=true: a missing service fails the run instead of skipping)", pytrace=False)
    pytest.skip(what)


def require(ok: bool, what: str) -> None:
    """`missing(what)` unless `ok`."""
    if not ok:
        missing(what)


@pytest.fixture(scope="session")
def triton_runtime() -> TritonRuntime:
    return TritonRuntime.ensure()


@pytest.fixture(scope="session")
def triton(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    with TritonServer(triton_runtime, models=["clf"], log_path=log) as server:
        yield server


def gateway_env(prefix: str | None = None) -> dict[str, str]:
    """A private Redis key prefix, so stored experiments of other tests never leak in."""
    return {"INFERGATE_REDIS_KEY_PREFIX": prefix or f"test-{uuid.uuid4().hex[:8]}:"}


@pytest.fixture(scope="session")
def gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with online features off: callers send the full input vector."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--log-level", "info"],
                        env=gateway_env(), log_path=Path(log)) as gw:
        yield gw
