"""Any datatype is served; what the gateway cannot serve is refused when it reads the model's
contract (at start-up, or when an experiment names it), with the reason: here a feature join
declared into an INT64 input.

A second Triton serves copies of `clf` declared with an FP64 input (`clf64`, served) and an
INT64 input (`clfint`, whose declared feature join is refused) beside `clf`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import yaml

from gateway.backend import ModelSpec
from gateway.tensors import TensorSpec
from runtime.modelgen import INPUT_WIDTH, load_weights, reference_forward
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer
from tests.conftest import gateway_env

REFUSAL = ("model 'clfint': feature join 'INPUT:concat' refused: input INPUT is INT64; "
           "features join into FP32 or FP16 inputs only")


def _spec(in_dtype: str = "FP32", out_dtype: str = "FP32") -> ModelSpec:
    return ModelSpec("m", ("1",), (TensorSpec("INPUT", in_dtype, (20,)),), (TensorSpec("PROBS", out_dtype, (4,)),), 8)


def test_every_kserve_datatype_is_servable() -> None:
    for dtype in ("BOOL", "INT8", "INT64", "UINT64", "FP16", "FP64", "BYTES"):
        assert _spec(dtype, dtype).refusal() is None
    assert "input INPUT is BF16" in _spec(in_dtype="BF16").refusal()
    assert _spec().simple and not _spec("FP64").simple


@pytest.fixture(scope="module")
def triton64(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("repo64")
    shutil.copytree(DEFAULT_REPOSITORY / "clf", repo / "clf", ignore=shutil.ignore_patterns("__pycache__"))
    for name, dtype in (("clf64", "TYPE_FP64"), ("clfint", "TYPE_INT64")):
        shutil.copytree(DEFAULT_REPOSITORY / "clf", repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        cfg = (repo / name / "config.pbtxt").read_text()
        (repo / name / "config.pbtxt").write_text(
            cfg.replace('name: "clf"', f'name: "{name}"').replace(
                '{ name: "INPUT", data_type: TYPE_FP32', f'{{ name: "INPUT", data_type: {dtype}'))
    with TritonServer(triton_runtime, models=["clf", "clf64", "clfint"], repository=repo,
                      log_path=repo / "triton.log") as server:
        yield server


def test_a_join_into_int64_is_refused_at_start_up_with_the_reason(triton64: TritonServer, tmp_path: Path) -> None:
    exp = {"name": "wide", "model": "wide", "salt": "w",
           "variants": [{"name": "a", "weight": 100, "target": {"model": "clfint", "version": "1"}}]}
    fp64 = {"name": "f64", "model": "f64", "salt": "f",
            "variants": [{"name": "a", "weight": 100, "target": {"model": "clf64", "version": "1"}}]}
    ok = {"name": "clf-demo", "model": "clf", "salt": "d",
          "variants": [{"name": "a", "weight": 100, "target": {"model": "clf", "version": "1"}}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"experiments": [ok, exp, fp64]}))
    token = "dtype-t0ken"
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": f"ops:{token}"}
    log = tmp_path / "gw.log"
    with GatewayProcess(triton64.grpc_url, args=["--features", "off", "--log-level", "info",
                                                 "--feature-join", "clfint=INPUT:concat",
                                                 "--experiments-file", str(tmp_path / "exp.yaml")],
                        env=env, log_path=log) as gw:
        r = httpx.post(f"{gw.url}/v1/infer", json={"model": "wide", "unit_id": "u", "inputs": [0.0] * 20})
        assert r.status_code != 200 and r.json()["error"] in ("model_unavailable", "model_not_found"), r.text
        assert httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "u",
                                                     "inputs": [0.0] * 20}).status_code == 200
        # An FP64 model is served (the v1 single vector is read as FP64).
        x = np.random.default_rng(3).standard_normal(INPUT_WIDTH)
        r = httpx.post(f"{gw.url}/v1/infer", json={"model": "f64", "unit_id": "u", "inputs": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"]["PROBS"], reference_forward(load_weights(1), x[None])[0],
                                   rtol=1e-5, atol=1e-6)
        # An experiment that names it later is refused too, before it is stored.
        put = httpx.put(f"{gw.url}/admin/experiments/wide", json=exp, headers={"authorization": f"Bearer {token}"})
        assert put.status_code == 400 and put.json()["error"] == "unknown_target", put.text
        assert REFUSAL in put.json()["message"]
    assert REFUSAL in log.read_text()
