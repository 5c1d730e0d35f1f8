"""The router inside the gateway: overrides, shadow traffic, hot reload across replicas."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import yaml

from runtime.modelgen import INPUT_WIDTH, load_weights, reference_forward
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer
from tests.conftest import gateway_env

TOKEN = "t0ken-for-tests"
EXPERIMENT = {
    "name": "clf-shadowed", "model": "clf", "salt": "s-1",
    "variants": [{"name": "a", "weight": 50, "target": {"model": "clf", "version": "1"}},
                 {"name": "b", "weight": 50, "target": {"model": "clf", "version": "2"}}],
    "allowlist": {"vip-1": "b"},
    "shadow": {"variant": "s", "share": 100, "target": {"model": "clf", "version": "2"}},
}


@pytest.fixture(scope="module")
def shared_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


def _start(triton: TritonServer, tmp: Path, prefix: str, name: str) -> GatewayProcess:
    exp_file = tmp / "experiments.yaml"
    exp_file.write_text(yaml.safe_dump({"experiments": [EXPERIMENT]}))
    env = {**gateway_env(prefix), "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"}
    return GatewayProcess(triton.grpc_url, args=["--features", "off", "--experiments-file", str(exp_file)],
                          env=env, log_path=tmp / f"{name}.log").start()


@pytest.fixture(scope="module")
def pair(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory,
         shared_prefix: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    tmp = tmp_path_factory.mktemp("routing")
    one = _start(triton, tmp, shared_prefix, "one")
    two = _start(triton, tmp, shared_prefix, "two")
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()


def _infer(gw: GatewayProcess, unit: str, headers: dict | None = None) -> httpx.Response:
    x = np.linspace(-1, 1, INPUT_WIDTH, dtype=np.float32).tolist()
    return httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": unit, "inputs": x},
                      headers=headers or {})


def test_override_needs_authentication(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    gw = pair[0]
    units = [f"o{i}" for i in range(40)]
    natural = {u: _infer(gw, u).json()["variant"] for u in units}
    flip = {"a": "b", "b": "a"}
    for u in units[:10]:
        forced = _infer(gw, u, {"x-variant-override": flip[natural[u]],
                                "authorization": f"Bearer {TOKEN}"}).json()["variant"]
        assert forced == flip[natural[u]]
        ignored = _infer(gw, u, {"x-variant-override": flip[natural[u]]}).json()["variant"]
        assert ignored == natural[u]
        wrong_token = _infer(gw, u, {"x-variant-override": flip[natural[u]],
                                     "authorization": "Bearer nope"}).json()["variant"]
        assert wrong_token == natural[u]
    r = _infer(gw, "o1", {"x-variant-override": "zzz", "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400
    assert _infer(gw, "vip-1").json()["variant"] == "b"


def test_shadow_gets_the_same_rows_and_never_touches_the_answer(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    gw = pair[0]
    x = np.linspace(-1, 1, INPUT_WIDTH, dtype=np.float32)[None, :]
    for i in range(30):
        body = _infer(gw, f"sh{i}").json()
        want = reference_forward(load_weights(int(body["model_version"])), x)[0]
        np.testing.assert_allclose(body["outputs"]["PROBS"], want, rtol=1e-5, atol=1e-6)
    time.sleep(0.2)
    text = httpx.get(f"{gw.url}/metrics").text
    count = float(re.search(r'^router_shadow_latency_seconds_count\{[^}]*variant="s"[^}]*\} (\S+)$',
                            text, re.M).group(1))
    assert count >= 30
    # The shadow (clf v2) against primaries a (v1) and b (v2): the diff histogram saw both
    # zero differences (b) and non-zero ones (a).
    diff_sum = float(re.search(r'^router_shadow_prediction_diff_sum\{[^}]*\} (\S+)$', text, re.M).group(1))
    assert diff_sum > 0


def test_weight_change_reaches_the_other_replica_within_a_second(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    one, two = pair
    units = [f"r{i}" for i in range(60)]
    assert {_infer(two, u).json()["variant"] for u in units} == {"a", "b"}
    all_b = {**EXPERIMENT, "variants": [{**EXPERIMENT["variants"][0], "weight": 0},
                                        {**EXPERIMENT["variants"][1], "weight": 100}]}
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.put(f"{one.url}/admin/experiments/clf-shadowed", json=all_b).status_code == 401
    bad = {**all_b, "variants": [{**EXPERIMENT["variants"][0], "weight": 10}, EXPERIMENT["variants"][1]]}
    r = httpx.put(f"{one.url}/admin/experiments/clf-shadowed", json=bad, headers=auth)
    assert r.status_code == 400 and r.json()["error"]
    t0 = time.monotonic()
    r = httpx.put(f"{one.url}/admin/experiments/clf-shadowed", json=all_b, headers=auth)
    assert r.status_code == 200, r.text
    while True:
        if {_infer(two, u).json()["variant"] for u in units} == {"b"}:
            break
        assert time.monotonic() - t0 < 1.0, "replica two did not apply the change within 1 s"
        time.sleep(0.02)
