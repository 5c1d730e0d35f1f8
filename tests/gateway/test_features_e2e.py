"""Online features joined by the gateway, against real Feast-in-Redis and real Triton."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from features.repo.datagen import FEATURE_NAMES, generate_frame
from features.repo.workspace import Workspace
from runtime.modelgen import load_weights, reference_forward
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env

NAN_USER, MISSING_USER = 5, 10**12


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[int, list]]]:
    path = tmp_path_factory.mktemp("feast")
    ws = Workspace(path, project=f"gw_{uuid.uuid4().hex[:8]}", online="redis")
    frame = generate_frame(50, seed=3)
    frame.loc[frame.user_id == NAN_USER, "sessions_7d"] = math.nan
    store = ws.apply(frame)
    ws.materialize(store, slices=1, progress=False)
    # Feast's own answer is the reference for what the gateway must join.
    ids = [1, 2, NAN_USER, 49, MISSING_USER]
    got = store.get_online_features(features=[f"user_features:{n}" for n in FEATURE_NAMES],
                                    entity_rows=[{"user_id": i} for i in ids]).to_dict()
    truth = {i: [got[n][k] for n in FEATURE_NAMES] for k, i in enumerate(ids)}
    yield path, truth


@pytest.fixture(scope="module")
def gateway_with_features(triton: TritonServer, feast_repo: tuple[Path, dict],
                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gwf") / "gateway.log"
    args = ["--features", "redis", "--feature-repo", str(feast_repo[0])]
    with GatewayProcess(triton.grpc_url, args=args, env=gateway_env(), log_path=log, grpc_port=free_port()) as gw:
        yield gw


def _expected(version: str, feats: list, inputs: list[float]) -> np.ndarray:
    # The reader's documented policy: a null feature (and a missing entity) gets its default, 0.0.
    row = np.array([0.0 if v is None else v for v in feats] + inputs, dtype=np.float32)[None, :]
    return reference_forward(load_weights(int(version)), row)[0]


@pytest.mark.parametrize("user", [1, 2, 49, NAN_USER, MISSING_USER])
def test_v1_joins_the_entitys_features(gateway_with_features: GatewayProcess, feast_repo: tuple, user: int) -> None:
    inputs = [0.5, -1.0, 0.25, 2.0]
    r = httpx.post(f"{gateway_with_features.url}/v1/infer", json={
        "model": "clf", "unit_id": f"f{user}", "entity": {"user_id": user}, "inputs": inputs, "timings": True})
    assert r.status_code == 200, r.text
    body = r.json()
    truth = feast_repo[1][user]
    np.testing.assert_allclose(body["outputs"]["PROBS"], _expected(body["model_version"], truth, inputs),
                               rtol=1e-5, atol=1e-6)
    assert body["features"]["missing_entity"] is (user == MISSING_USER)
    assert body["features"]["null_count"] == (len(FEATURE_NAMES) if user == MISSING_USER
                                              else sum(v is None for v in truth))
    assert body["timings_ms"]["features"] > 0


def test_v2_with_entity_parameter_and_official_client(gateway_with_features: GatewayProcess,
                                                      feast_repo: tuple) -> None:
    client = triton_http.InferenceServerClient(gateway_with_features.url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata("clf")
        assert meta["parameters"]["entity_keys"] == ["user_id"] and meta["parameters"]["request_width"] == 4
        x = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.0, 0.5]], dtype=np.float32)
        inp = triton_http.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer("clf", [inp], parameters={"user_id": 2, "unit_id": "v2-user"})
        version = res.get_response()["model_version"]
        want = np.stack([_expected(version, feast_repo[1][2], row.tolist()) for row in x])
        np.testing.assert_allclose(res.as_numpy("PROBS"), want, rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def test_grpc_front_joins_the_entity_named_in_the_parameters(gateway_with_features: GatewayProcess,
                                                             feast_repo: tuple) -> None:
    """The KServe v2 gRPC front: the entity from the request parameters (int64 or string), the
    request-side columns in `raw_input_contents`; a bad entity value names the key."""
    client = triton_grpc.InferenceServerClient(gateway_with_features.grpc_url)
    try:
        x = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.0, 0.5]], dtype=np.float32)
        inp = triton_grpc.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        for user in (2, 49):
            res = client.infer("clf", [inp], parameters={"user_id": user, "unit_id": f"grpc-user-{user}"})
            version = res.get_response().model_version
            want = np.stack([_expected(version, feast_repo[1][user], row.tolist()) for row in x])
            np.testing.assert_allclose(res.as_numpy("PROBS"), want, rtol=1e-5, atol=1e-6)
        with pytest.raises(triton_grpc.InferenceServerException) as exc:
            client.infer("clf", [inp], parameters={"user_id": "not-a-number", "unit_id": "u"})
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert exc.value.message().startswith("invalid_field: entity.user_id"), exc.value.message()
    finally:
        client.close()


@pytest.mark.parametrize(("entity", "field"), [
    ({"user_id": "not-a-number"}, "entity.user_id"),
    ({"customer": 3}, "entity.user_id"),
])
def test_a_bad_entity_is_400_naming_the_key(gateway_with_features: GatewayProcess, entity: dict, field: str) -> None:
    r = httpx.post(f"{gateway_with_features.url}/v1/infer", json={
        "model": "clf", "unit_id": "u", "entity": entity, "inputs": [0.0] * 4})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(field)


def test_without_entity_the_full_vector_still_works(gateway_with_features: GatewayProcess) -> None:
    r = httpx.post(f"{gateway_with_features.url}/v1/infer", json={
        "model": "clf", "unit_id": "u", "inputs": [0.0] * 20})
    assert r.status_code == 200, r.text
