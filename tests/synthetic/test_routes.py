"""``POST /v1/synthetic/{dataset}`` and ``GET /v1/synthetic`` on a real gateway process.

The shipped demo version (synthetic/demo) is imported into a private MLflow registry and
published through the gate; the gateway loads it at start-up through ``--extension``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pyarrow as pa
import pytest
from _synthetic_fixture import DEMO

from runtime.stack import GatewayProcess
from synthetic.cli import main
from synthetic.sampler import Sampler
from tests.conftest import gateway_env

MAX_ROWS = 20_000


@pytest.fixture(scope="module")
def synth_gateway(triton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("synthetic-gw")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(["--mlflow-uri", uri, "import", str(DEMO), "--publish"]) == 0
    env = {**gateway_env(), "INFERGATE_MLFLOW_URI": uri, "INFERGATE_SYNTHETIC_MAX_ROWS": str(MAX_ROWS)}
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--extension", "synthetic.routes:extension"],
                        env=env, log_path=Path(tmp / "gateway.log")) as gw:
        yield gw


@pytest.fixture(scope="module")
def demo() -> Sampler:
    return Sampler.load(DEMO)


def test_list_published(synth_gateway):
    r = httpx.get(f"{synth_gateway.url}/v1/synthetic", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert doc["max_rows"] == MAX_ROWS
    [ds] = doc["datasets"]
    assert ds["dataset"] == "user_features" and ds["version"] == 1 and ds["aliases"] == ["published"]
    assert ds["gate"] == "passed" and ds["c2st_auc"] <= 0.85 and len(ds["columns"]) == 16


def test_json_rows_equal_in_process_sample(synth_gateway, demo):
    r = httpx.post(f"{synth_gateway.url}/v1/synthetic/user_features", json={"rows": 500, "seed": 5}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-synthetic-version"] == "1"
    doc = r.json()
    assert (doc["dataset"], doc["version"], doc["seed"], doc["rows"]) == ("user_features", 1, 5, 500)
    expected = demo.sample(500, 5)
    assert list(doc["columns"]) == list(demo.columns)
    for i, name in enumerate(demo.columns):
        got = np.array([np.nan if v is None else v for v in doc["columns"][name]], np.float32)
        np.testing.assert_array_equal(got, expected[:, i])


def test_arrow_stream_same_seed_same_rows(synth_gateway, demo):
    url = f"{synth_gateway.url}/v1/synthetic/user_features"
    a = httpx.post(url, json={"rows": MAX_ROWS, "seed": 7, "format": "arrow"}, timeout=30)
    b = httpx.post(url, json={"rows": MAX_ROWS, "seed": 7, "format": "arrow"}, timeout=30)
    c = httpx.post(url, json={"rows": MAX_ROWS, "seed": 8, "format": "arrow"}, timeout=30)
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert a.content == b.content and a.content != c.content
    table = pa.ipc.open_stream(io.BytesIO(a.content)).read_all()
    assert table.num_rows == MAX_ROWS and table.column_names == list(demo.columns)
    assert table.schema.metadata[b"seed"] == b"7"
    expected = demo.sample(MAX_ROWS, 7)
    for i, name in enumerate(demo.columns):
        col = table.column(name)
        assert col.type == pa.float32()
        got = col.to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(got, expected[:, i])
        assert col.null_count == int(np.isnan(expected[:, i]).sum())


@pytest.mark.parametrize("body, field", [
    ({"rows": 0, "seed": 1}, "rows"),
    ({"rows": -5, "seed": 1}, "rows"),
    ({"rows": MAX_ROWS + 1, "seed": 1}, "rows"),
    ({"rows": "10", "seed": 1}, "rows"),
    ({"rows": 1.5, "seed": 1}, "rows"),
    ({"rows": True, "seed": 1}, "rows"),
    ({"seed": 1}, "rows"),
    ({"rows": 10, "seed": 1.5}, "seed"),
    ({"rows": 10, "seed": "x"}, "seed"),
    ({"rows": 10, "seed": -1}, "seed"),
    ({"rows": 10, "seed": None}, "seed"),
    ({"rows": 10, "seed": 1, "format": "xml"}, "format"),
    ({"rows": 10, "seed": 1, "colour": "red"}, "colour"),
    ([1, 2], "body"),
])
def test_bad_input_400_names_the_field(synth_gateway, body, field):
    r = httpx.post(f"{synth_gateway.url}/v1/synthetic/user_features", json=body, timeout=10)
    assert r.status_code == 400
    doc = r.json()
    assert doc["error"] == "invalid_field"
    assert doc["message"].startswith(f"{field}: ")


def test_other_refusals(synth_gateway):
    base = f"{synth_gateway.url}/v1/synthetic"
    r = httpx.post(f"{base}/nope", json={"rows": 1, "seed": 1}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found" and "nope" in r.json()["message"]
    r = httpx.post(f"{base}/user_features", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("body: invalid JSON")
    r = httpx.post(f"{base}/user_features", content=b"rows=1", timeout=10, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(f"{base}/user_features", content=b"{" + b" " * 10_000 + b"}", timeout=10)
    assert r.status_code == 413
    r = httpx.get(f"{base}/user_features", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_openapi_documents_the_routes(synth_gateway):
    doc = httpx.get(f"{synth_gateway.url}/openapi.json", timeout=10).json()
    post = doc["paths"]["/v1/synthetic/{dataset}"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["properties"]["rows"]["maximum"] == MAX_ROWS
    assert "get" in doc["paths"]["/v1/synthetic"]
    assert "/v2/health/live" in doc["paths"]  # the gateway's own paths are still there
