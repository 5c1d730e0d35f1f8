"""End to end: HTTP in, real Triton over gRPC, answers checked against the numpy reference."""

from __future__ import annotations

import asyncio
import gzip
import re

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http

from router import default_experiments
from runtime.modelgen import INPUT_WIDTH, load_weights, reference_forward
from runtime.stack import GatewayProcess

VERSION_OF = {v.name: v.target.version for v in default_experiments()[0].variants}


def _x(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, INPUT_WIDTH)).astype(np.float32)


def _expected(version: str, x: np.ndarray) -> np.ndarray:
    return reference_forward(load_weights(int(version)), x)


def test_v1_answers_match_the_reference_of_each_variant(gateway: GatewayProcess) -> None:
    x = _x(1)
    seen = set()
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(40):
            r = client.post("/v1/infer", json={"model": "clf", "unit_id": f"user-{i}",
                                                "inputs": x[0].tolist(), "timings": True})
            assert r.status_code == 200, r.text
            body = r.json()
            assert VERSION_OF[body["variant"]] == body["model_version"]
            np.testing.assert_allclose(body["outputs"]["PROBS"], _expected(body["model_version"], x)[0],
                                       rtol=1e-5, atol=1e-6)
            assert set(body["timings_ms"]) >= {"features", "queue", "inference", "total"}
            seen.add(body["variant"])
    assert seen == {"a", "b"}


def test_the_same_unit_always_gets_the_same_variant(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        variants = {client.post("/v1/infer", json={"model": "clf", "unit_id": "sticky-7",
                                                    "inputs": _x(1)[0].tolist()}).json()["variant"]
                    for _ in range(10)}
    assert len(variants) == 1


@pytest.mark.parametrize("binary", [True, False])
def test_official_triton_http_client_works_unchanged(gateway: GatewayProcess, binary: bool) -> None:
    client = triton_http.InferenceServerClient(gateway.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("clf")
        meta = client.get_model_metadata("clf")
        assert meta["inputs"][0]["shape"] == [-1, INPUT_WIDTH]
        x = _x(3, seed=1)
        inp = triton_http.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton_http.InferRequestedOutput("PROBS", binary_data=binary)]
        res = client.infer("clf", [inp], outputs=outputs, headers={"x-unit-id": "client-1"})
        version = res.get_response()["model_version"]
        np.testing.assert_allclose(res.as_numpy("PROBS"), _expected(version, x), rtol=1e-5, atol=1e-6)
        # Defaults of the client: binary inputs, outputs not named -> binary_data_output.
        inp2 = triton_http.InferInput("INPUT", list(x.shape), "FP32")
        inp2.set_data_from_numpy(x)
        res2 = client.infer("clf", [inp2], parameters={"unit_id": "client-1"})
        np.testing.assert_allclose(res2.as_numpy("PROBS"), res.as_numpy("PROBS"))
    finally:
        client.close()


def test_gzip_request_body(gateway: GatewayProcess) -> None:
    body = gzip.compress(orjson.dumps({"model": "clf", "unit_id": "z", "inputs": _x(1)[0].tolist()}))
    r = httpx.post(f"{gateway.url}/v1/infer", content=body,
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_v2_compressed_request_end_to_end(gateway: GatewayProcess, binary: bool, algorithm: str) -> None:
    """KServe v2 with a compressed body, sent by the official client's own compression
    (`Content-Encoding: gzip|deflate`), JSON and binary tensors: the answer matches the reference."""
    client = triton_http.InferenceServerClient(gateway.url.removeprefix("http://"))
    try:
        x = _x(4, seed=7)
        inp = triton_http.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = client.infer("clf", [inp], outputs=[triton_http.InferRequestedOutput("PROBS", binary_data=binary)],
                           headers={"x-unit-id": f"gz-{algorithm}"}, request_compression_algorithm=algorithm)
        version = res.get_response()["model_version"]
        np.testing.assert_allclose(res.as_numpy("PROBS"), _expected(version, x), rtol=1e-5, atol=1e-6)
    finally:
        client.close()
    doc = orjson.dumps({"parameters": {"unit_id": "gz"}, "inputs": [
        {"name": "INPUT", "datatype": "FP32", "shape": [1, INPUT_WIDTH], "data": _x(1)[0].tolist()}]})
    r = httpx.post(f"{gateway.url}/v2/models/clf/infer", content=gzip.compress(doc)[:-6],
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text   # truncated: refused


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "bad_request", None),
    (orjson.dumps({"unit_id": "u", "inputs": [0.0] * 20}), 400, "invalid_field", "model"),
    (orjson.dumps({"model": "nope", "unit_id": "u", "inputs": [0.0] * 20}), 404, "model_not_found", None),
    (orjson.dumps({"model": "clf", "inputs": [0.0] * 20}), 400, "invalid_field", "unit_id"),
    (orjson.dumps({"model": "clf", "unit_id": "u", "inputs": [0.0] * 19}), 400, "invalid_field", "inputs"),
    (orjson.dumps({"model": "clf", "unit_id": "u", "inputs": ["a"] * 20}), 400, "invalid_field", "inputs"),
    (orjson.dumps({"model": "clf", "unit_id": True, "inputs": [0.0] * 20}), 400, "invalid_field", "unit_id"),
    (orjson.dumps({"model": "clf", "unit_id": "u", "inputs": [1e39] * 20}), 400, "invalid_field", "inputs"),
    (orjson.dumps({"model": "clf", "unit_id": "u", "entity": {"user_id": 1}, "inputs": [0.0] * 4}),
     400, "invalid_field", "entity"),
])
def test_v1_bad_input_is_a_clear_4xx(gateway: GatewayProcess, body: bytes, status: int, code: str,
                                     field: str | None) -> None:
    r = httpx.post(f"{gateway.url}/v1/infer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error"] == code and err["message"]
    if field:
        assert err["message"].startswith(field)


@pytest.mark.parametrize(("doc", "field"), [
    ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}]}, "inputs[0].name"),
    ({"inputs": [{"name": "INPUT", "datatype": "INT8", "shape": [1, 20], "data": [0] * 20}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 7], "data": [0.0] * 7}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [2, 20], "data": [0.0] * 20}]}, "inputs[0].data"),
    ({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 20], "data": ["x"] * 20}]}, "inputs[0].data"),
    ({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}],
      "outputs": [{"name": "NOPE"}]}, "outputs[0].name"),
    ({"inputs": []}, "inputs"),
])
def test_v2_bad_input_names_the_field(gateway: GatewayProcess, doc: dict, field: str) -> None:
    r = httpx.post(f"{gateway.url}/v2/models/clf/infer", content=orjson.dumps(doc), headers={"x-unit-id": "u"})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(field)


def test_v2_without_unit_id_is_400_and_unknown_model_404(gateway: GatewayProcess) -> None:
    doc = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}]}
    r = httpx.post(f"{gateway.url}/v2/models/clf/infer", json=doc)
    assert r.status_code == 400 and r.json()["message"].startswith("unit_id")
    r = httpx.post(f"{gateway.url}/v2/models/other/infer", json=doc, headers={"x-unit-id": "u"})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"
    assert httpx.get(f"{gateway.url}/v2/models/other").status_code == 404
    r = httpx.get(f"{gateway.url}/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    r = httpx.post(f"{gateway.url}/v1/infer", content=b" " * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_wrong_content_type_is_415(gateway: GatewayProcess) -> None:
    r = httpx.post(f"{gateway.url}/v1/infer", content=b"a=b", headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_concurrent_requests_are_batched_and_counted(gateway: GatewayProcess) -> None:
    def scrape() -> dict[str, float]:
        text = httpx.get(f"{gateway.url}/metrics").text
        out: dict[str, float] = {}
        for name, labels, value in re.findall(r'^(infergate_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$', text, re.M):
            out[f"{name}{{{labels}}}"] = float(value)
        return out

    before = scrape()
    x = _x(1)[0].tolist()
    async with httpx.AsyncClient(base_url=gateway.url, limits=httpx.Limits(max_connections=64)) as client:
        rs = await asyncio.gather(*(client.post("/v1/infer", json={"model": "clf", "unit_id": f"c{i}", "inputs": x})
                                    for i in range(300)))
    assert all(r.status_code == 200 for r in rs)
    counts = {"a": 0, "b": 0}
    for r in rs:
        counts[r.json()["variant"]] += 1
    after = scrape()
    for v, n in counts.items():
        key = f'infergate_requests_total{{model="clf",variant="{v}"}}'
        assert after.get(key, 0) - before.get(key, 0) == n
    calls = sum(after[k] - before.get(k, 0) for k in after if k.startswith("infergate_batch_requests_count"))
    rows = sum(after[k] - before.get(k, 0) for k in after if k.startswith("infergate_batch_requests_sum"))
    assert rows == 300
    assert calls < 300, "concurrent requests should share Triton calls"
    assert after['infergate_queued_rows{target="clf:1"}'] == 0   # nothing left waiting


async def test_requests_seldom_pay_a_garbage_collection(gateway: GatewayProcess) -> None:
    """`gc_threshold` (20,000 once serving, start-up objects frozen): 2,000 requests trigger at
    most a few collections, where Python's 700 ran 16 for them here (one every ~125 requests),
    each a pause of the event loop."""
    def collections() -> float:
        text = httpx.get(f"{gateway.url}/metrics").text
        return sum(float(v) for v in re.findall(r'^python_gc_collections_total\{generation="\d"\} ([0-9.e+]+)$', text, re.M))

    x = _x(1)[0].tolist()
    async with httpx.AsyncClient(base_url=gateway.url, limits=httpx.Limits(max_connections=32)) as client:
        before = collections()
        for _ in range(4):
            rs = await asyncio.gather(*(client.post("/v1/infer", json={"model": "clf", "unit_id": f"g{i}", "inputs": x})
                                        for i in range(500)))
            assert all(r.status_code == 200 for r in rs)
        after = collections()
    assert after - before <= 5, f"{after - before:.0f} collections for 2,000 requests"


def test_start_up_names_the_queue_delay_its_batches_wait(gateway: GatewayProcess) -> None:
    """The demo model keeps Triton's 100 µs queue delay; a batching gateway says what it costs."""
    assert gateway.log_path is not None
    text = gateway.log_path.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if "Triton holds each of the gateway's calls up to" in ln]
    assert lines and all("up to 100 µs" in ln for ln in lines), text[-2000:]
    assert {re.search(r"(clf:\S+): Triton", ln).group(1) for ln in lines} == {"clf:1", "clf:2"}  # type: ignore[union-attr]
