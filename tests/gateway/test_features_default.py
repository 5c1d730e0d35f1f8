"""`feature_on_unavailable=default`: with the feature store down, the gateway still answers
200, flags the answer `defaulted`, and infers on the defaults (the row a missing entity gets).
Real Feast-in-Redis on a redis-server this test owns and stops, real Triton."""

from __future__ import annotations

import uuid
from typing import Iterator

import httpx
import numpy as np
import pytest

from features.repo.datagen import generate_frame
from features.repo.workspace import Workspace
from redis_proc import RedisProcess
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer
from tests.conftest import gateway_env

MISSING_USER = 10**12
INPUTS = [0.5, -1.0, 0.25, 2.0]


@pytest.fixture(scope="module")
def store_and_gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[RedisProcess, GatewayProcess]]:
    redis_server = RedisProcess().start()
    try:
        path = tmp_path_factory.mktemp("feast-default")
        ws = Workspace(path, project=f"d_{uuid.uuid4().hex[:8]}", online="redis", redis_url=redis_server.url)
        ws.materialize(ws.apply(generate_frame(20, seed=5)), slices=1, progress=False)
        args = ["--features", "redis", "--feature-repo", str(path), "--feature-on-unavailable", "default"]
        with GatewayProcess(triton.grpc_url, args=args, env=gateway_env(),
                            log_path=path / "gateway.log") as gw:
            yield redis_server, gw
    finally:
        redis_server.stop()


def _infer(gw: GatewayProcess, user: int) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "same-unit",
                                                  "entity": {"user_id": user}, "inputs": INPUTS})


def test_store_down_answers_200_defaulted(store_and_gateway) -> None:
    redis_server, gw = store_and_gateway
    up = _infer(gw, 3)
    assert up.status_code == 200 and up.json()["features"]["defaulted"] is False, up.text
    missing = _infer(gw, MISSING_USER).json()   # the defaults row, while the store answers
    assert missing["features"]["missing_entity"] is True and missing["features"]["defaulted"] is False

    redis_server.stop()
    answers = [_infer(gw, 3) for _ in range(10)]   # past the circuit breaker's trip count too
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["features"]["defaulted"] is True
        assert body["variant"] == missing["variant"]
        np.testing.assert_allclose(body["outputs"]["PROBS"], missing["outputs"]["PROBS"], rtol=1e-6)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert "features_defaulted_rows_total" in metrics
