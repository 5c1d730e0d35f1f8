"""A target no experiment routes to any more keeps its batcher for the grace period, then
drains and is dropped; `GET /admin/triton` and `GET /admin/targets` need the admin token."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from runtime.stack import GatewayProcess
from runtime.triton import TritonServer

TOKEN = f"retire-{uuid.uuid4().hex[:10]}"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gw(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gw-retire") / "gateway.log"
    env = {"INFERGATE_REDIS_KEY_PREFIX": f"test-retire-{uuid.uuid4().hex[:8]}:",
           "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}", "INFERGATE_RETIRE_GRACE_S": "1.0"}
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--model-repository", "/srv/models"],
                        env=env, log_path=Path(log)) as g:
        yield g


def targets(url: str) -> dict[str, str]:
    rows = httpx.get(f"{url}/admin/targets", headers=AUTH, timeout=5).json()["targets"]
    return {f"{r['model']}:{r['version']}": r["state"] for r in rows}


def test_triton_and_targets_need_the_token(gw: GatewayProcess, triton: TritonServer) -> None:
    for path in ("/admin/triton", "/admin/targets"):
        r = httpx.get(f"{gw.url}{path}", timeout=5)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    doc = httpx.get(f"{gw.url}/admin/triton", headers=AUTH, timeout=5).json()
    assert doc == {"replicas": [{"url": triton.grpc_url, "up": True}], "model_repository": "/srv/models"}


def test_unrouted_target_is_retired_after_grace_and_drain(gw: GatewayProcess) -> None:
    assert targets(gw.url) == {"clf:1": "serving", "clf:2": "serving"}
    body = {"model": "clf", "salt": "demo-1", "control": "a",
            "variants": [{"name": "a", "weight": 50, "target": {"model": "clf", "version": "1"}},
                         {"name": "b", "weight": 50, "target": {"model": "clf", "version": "1"}}]}
    r = httpx.put(f"{gw.url}/admin/experiments/clf-demo", json=body, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    assert targets(gw.url) == {"clf:1": "serving", "clf:2": "retiring"}
    deadline = time.monotonic() + 10
    while "clf:2" in targets(gw.url):
        assert time.monotonic() < deadline, targets(gw.url)
        time.sleep(0.05)
    assert targets(gw.url) == {"clf:1": "serving"}
    # routed again: a fresh batcher, answers from version 2
    body["variants"][1]["target"]["version"] = "2"
    assert httpx.put(f"{gw.url}/admin/experiments/clf-demo", json=body, headers=AUTH, timeout=5).status_code == 200
    assert targets(gw.url) == {"clf:1": "serving", "clf:2": "serving"}
    seen = set()
    for i in range(40):
        r = httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": f"u{i}", "inputs": [0.0] * 20},
                       timeout=5)
        assert r.status_code == 200, r.text
        seen.add(r.json()["model_version"])
    assert seen == {"1", "2"}
