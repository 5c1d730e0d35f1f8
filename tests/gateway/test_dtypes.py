"""A model whose input or output is not FP32 is refused when the gateway reads its spec, with
the reason: the codecs and the pipeline read rows as float32 (until any datatype is served).

A second Triton serves a copy of `clf` declared with an FP64 input (`clf64`) beside `clf`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from gateway.backend import ModelSpec
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer
from tests.conftest import gateway_env

REFUSAL = "model 'clf64': input INPUT is FP64; the gateway serves FP32 inputs and outputs only"


def _spec(**kw) -> ModelSpec:
    base = dict(name="m", versions=("1",), input_name="INPUT", input_dtype="FP32", input_width=20,
                output_name="PROBS", output_dtype="FP32", output_width=4, max_batch_size=8)
    return ModelSpec(**{**base, **kw})


def test_only_fp32_in_and_out_is_servable() -> None:
    assert _spec().refusal() is None
    assert "input INPUT is INT64" in _spec(input_dtype="INT64").refusal()
    assert "output PROBS is FP16" in _spec(output_dtype="FP16").refusal()


@pytest.fixture(scope="module")
def triton64(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("repo64")
    shutil.copytree(DEFAULT_REPOSITORY / "clf", repo / "clf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DEFAULT_REPOSITORY / "clf", repo / "clf64", ignore=shutil.ignore_patterns("__pycache__"))
    cfg = (repo / "clf64" / "config.pbtxt").read_text()
    (repo / "clf64" / "config.pbtxt").write_text(
        cfg.replace('name: "clf"', 'name: "clf64"').replace(
            '{ name: "INPUT", data_type: TYPE_FP32', '{ name: "INPUT", data_type: TYPE_FP64'))
    with TritonServer(triton_runtime, models=["clf", "clf64"], repository=repo,
                      log_path=repo / "triton.log") as server:
        yield server


def test_a_non_fp32_model_is_refused_at_start_up_with_the_reason(triton64: TritonServer, tmp_path: Path) -> None:
    exp = {"name": "wide", "model": "wide", "salt": "w",
           "variants": [{"name": "a", "weight": 100, "target": {"model": "clf64", "version": "1"}}]}
    ok = {"name": "clf-demo", "model": "clf", "salt": "d",
          "variants": [{"name": "a", "weight": 100, "target": {"model": "clf", "version": "1"}}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"experiments": [ok, exp]}))
    token = "dtype-t0ken"
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": f"ops:{token}"}
    log = tmp_path / "gw.log"
    with GatewayProcess(triton64.grpc_url, args=["--features", "off", "--log-level", "info",
                                                 "--experiments-file", str(tmp_path / "exp.yaml")],
                        env=env, log_path=log) as gw:
        r = httpx.post(f"{gw.url}/v1/infer", json={"model": "wide", "unit_id": "u", "inputs": [0.0] * 20})
        assert r.status_code != 200 and r.json()["error"] in ("model_unavailable", "model_not_found"), r.text
        assert httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "u",
                                                     "inputs": [0.0] * 20}).status_code == 200
        # An experiment that names it later is refused too, before it is stored.
        put = httpx.put(f"{gw.url}/admin/experiments/wide", json=exp, headers={"authorization": f"Bearer {token}"})
        assert put.status_code == 400 and put.json()["error"] == "unknown_target", put.text
        assert REFUSAL in put.json()["message"]
    assert REFUSAL in log.read_text()
