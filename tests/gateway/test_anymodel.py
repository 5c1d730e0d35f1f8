"""Any model Triton serves, through the gateway: the official `tritonclient.http` sends the
same requests to Triton directly and through the gateway, for every test model
(`runtime.anymodels`), JSON and binary, and the outputs must be byte-identical (and equal
to the numpy forward). Bad inputs get a 400 naming the input, and never reach Triton.

One Triton serves the test models beside `clf`; the gateway routes `clf` by its default
experiment and every test model by a default route (no experiment names them).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest
import schemathesis
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode
from tritonclient.utils import InferenceServerException

from gateway.openapi import openapi_document
from runtime.anymodels import ECHO_TYPES, FORWARD
from runtime.modelgen import anymodel_specs, generate_test_models
from runtime.stack import GatewayProcess
from runtime.triton import DEFAULT_REPOSITORY, TritonRuntime, TritonServer, free_port
from tests.conftest import gateway_env
from tests.gateway.test_fuzz import CHECKS

MODELS = {m.name: m for m in anymodel_specs()}
_NP = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
       "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
       "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


@contextlib.contextmanager
def serve_test_models(runtime: TritonRuntime, repo: Path, *, infer_http: bool = False
                      ) -> Iterator[tuple[TritonServer, GatewayProcess]]:
    """One Triton with `clf` and every test model, and a gateway in front (its inference calls
    over Triton's HTTP port when `infer_http`, else gRPC)."""
    shutil.copytree(DEFAULT_REPOSITORY / "clf", repo / "clf", ignore=shutil.ignore_patterns("__pycache__"))
    generate_test_models(repo)
    with TritonServer(runtime, models=["clf", *MODELS], repository=repo, log_path=repo / "triton.log") as triton:
        http = ["--triton-http-url", triton.http_url] if infer_http else []
        with GatewayProcess(triton.grpc_url, args=["--features", "off", "--log-level", "info", *http],
                            env=gateway_env(), log_path=repo / "gateway.log", grpc_port=free_port()) as gw:
            yield triton, gw


@pytest.fixture(scope="module")
def stack(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[TritonServer, GatewayProcess]]:
    with serve_test_models(triton_runtime, tmp_path_factory.mktemp("anyrepo")) as served:
        yield served


def _inputs(model: str, n: int, seed: int, seq: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "text_ids":
        ids = rng.integers(0, 5000, (n, seq)).astype(np.int64)
        mask = (rng.random((n, seq)) < 0.8).astype(np.int64)
        return {"INPUT_IDS": ids, "ATTENTION_MASK": mask}
    if model == "image_fp16":
        return {"IMAGE": rng.standard_normal((n, 3, 8, 8)).astype(np.float16)}
    if model == "bytes_len":
        words = ["héllo", "", "gateway", "ünïcode ✓", "x" * 40]
        return {"TEXT": np.array([[words[(seed + i) % len(words)].encode()] for i in range(n)], dtype=object)}
    if model == "two_out":
        return {"X": rng.standard_normal((n, 4)).astype(np.float32)}
    if model == "nobatch":
        return {"X": rng.integers(-50, 50, (2, 3)).astype(np.int32)}
    out = {}
    for t in ECHO_TYPES:
        if t == "BOOL":
            a = rng.random((n, 2)) < 0.5
        elif t == "BYTES":
            a = np.array([[f"s{i}-{j}".encode() for j in range(2)] for i in range(n)], dtype=object)
        elif t.startswith("FP"):
            a = rng.standard_normal((n, 2)).astype(_NP[t])
        else:
            info = np.iinfo(_NP[t])
            a = np.array([[info.min, info.max]] * n, dtype=_NP[t])
        out[f"IN_{t}"] = a
    return out


def _infer(url: str, model: str, x: dict[str, np.ndarray], binary: bool, outputs: list[str] | None = None
           ) -> triton_http.InferResult:
    client = triton_http.InferenceServerClient(url)
    try:
        inputs = []
        for t in MODELS[model].inputs:
            name, dtype = t[0], t[1]
            inp = triton_http.InferInput(name, list(x[name].shape), dtype)
            inp.set_data_from_numpy(x[name], binary_data=binary)
            inputs.append(inp)
        req_out = [triton_http.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
        return client.infer(model, inputs, outputs=req_out, headers={"x-unit-id": "any-1"})
    finally:
        client.close()


def _json_ok(model: str) -> bool:
    """Triton's HTTP front takes and gives FP16 only in binary."""
    return not any(t[1] == "FP16" for t in (*MODELS[model].inputs, *MODELS[model].outputs))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_byte_identical_to_triton_direct(stack: tuple[TritonServer, GatewayProcess], model: str, binary: bool) -> None:
    triton, gw = stack
    m = MODELS[model]
    n = 1 if m.max_batch_size == 0 else 3
    x = _inputs(model, n, seed=len(model))
    via_gw = _infer(gw.url.removeprefix("http://"), model, x, binary)
    expected = FORWARD[model](x)
    if binary or _json_ok(model):
        direct = _infer(triton.http_url, model, x, binary)
    else:
        with pytest.raises(InferenceServerException):   # Triton refuses FP16 in JSON
            _infer(triton.http_url, model, x, binary)
        direct = None
    for name, _, _ in m.outputs:
        got = via_gw.as_numpy(name)
        want = expected[name]
        if direct is not None:
            ref = direct.as_numpy(name)
            assert got.dtype == ref.dtype and got.shape == ref.shape, (name, got.dtype, ref.dtype)
            if got.dtype == object:
                assert got.tolist() == ref.tolist(), name
            else:
                assert got.tobytes() == ref.tobytes(), name
        if want.dtype == object:
            norm = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in got.tolist()]
            assert norm == [[v.decode() for v in row] for row in want.tolist()], name
        else:
            np.testing.assert_array_equal(got.astype(want.dtype), want, err_msg=name)


def _infer_grpc(url: str, model: str, x: dict[str, np.ndarray], outputs: list[str] | None = None
                ) -> triton_grpc.InferResult:
    client = triton_grpc.InferenceServerClient(url)
    try:
        inputs = []
        for t in MODELS[model].inputs:
            name, dtype = t[0], t[1]
            inp = triton_grpc.InferInput(name, list(x[name].shape), dtype)
            inp.set_data_from_numpy(x[name])
            inputs.append(inp)
        req_out = [triton_grpc.InferRequestedOutput(o) for o in outputs] if outputs else None
        return client.infer(model, inputs, outputs=req_out, parameters={"unit_id": "any-1"})
    finally:
        client.close()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_grpc_byte_identical_to_triton_direct(stack: tuple[TritonServer, GatewayProcess], model: str) -> None:
    """The same through the gateway's KServe v2 gRPC front and Triton's own gRPC port
    (official `tritonclient.grpc`, raw_input_contents), every test model."""
    triton, gw = stack
    m = MODELS[model]
    n = 1 if m.max_batch_size == 0 else 3
    x = _inputs(model, n, seed=len(model) + 1)
    via_gw = _infer_grpc(gw.grpc_url, model, x)
    direct = _infer_grpc(triton.grpc_url, model, x)
    for name, _, _ in m.outputs:
        got, ref = via_gw.as_numpy(name), direct.as_numpy(name)
        assert got.dtype == ref.dtype and got.shape == ref.shape, (name, got.dtype, ref.dtype)
        if got.dtype == object:
            assert got.tolist() == ref.tolist(), name
        else:
            assert got.tobytes() == ref.tobytes(), name
    if len(m.outputs) > 1:   # outputs selection: only the one asked for
        one = m.outputs[-1][0]
        sel = _infer_grpc(gw.grpc_url, model, x, outputs=[one])
        assert [o.name for o in sel.get_response().outputs] == [one]


def test_grpc_bad_input_names_the_input(stack: tuple[TritonServer, GatewayProcess]) -> None:
    triton, gw = stack
    x = _inputs("text_ids", 2, seed=9)
    x["ATTENTION_MASK"] = x["ATTENTION_MASK"].astype(np.int32)
    client = triton_grpc.InferenceServerClient(gw.grpc_url)
    try:
        inputs = [triton_grpc.InferInput("INPUT_IDS", list(x["INPUT_IDS"].shape), "INT64"),
                  triton_grpc.InferInput("ATTENTION_MASK", list(x["ATTENTION_MASK"].shape), "INT32")]
        inputs[0].set_data_from_numpy(x["INPUT_IDS"])
        inputs[1].set_data_from_numpy(x["ATTENTION_MASK"])
        with pytest.raises(InferenceServerException) as err:
            client.infer("text_ids", inputs, parameters={"unit_id": "any-1"})
    finally:
        client.close()
    assert "StatusCode.INVALID_ARGUMENT" in str(err.value.status())
    assert "invalid_field" in err.value.message() and "ATTENTION_MASK" in err.value.message()


def test_outputs_selection_and_mixed_binary(stack: tuple[TritonServer, GatewayProcess]) -> None:
    triton, gw = stack
    x = _inputs("two_out", 2, seed=4)
    head = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": x["X"].ravel().tolist()}],
            "outputs": [{"name": "LABEL", "parameters": {"binary_data": True}}, {"name": "TOP"}],
            "parameters": {"unit_id": "sel"}}
    r = httpx.post(f"{gw.url}/v2/models/two_out/infer", content=orjson.dumps(head))
    assert r.status_code == 200, r.text
    hl = int(r.headers["inference-header-content-length"])
    doc = orjson.loads(r.content[:hl])
    assert [o["name"] for o in doc["outputs"]] == ["LABEL", "TOP"]
    assert doc["outputs"][1]["data"] == FORWARD["two_out"](x)["TOP"].ravel().tolist()
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert len(r.content) == hl + size
    direct = httpx.post(f"http://{triton.http_url}/v2/models/two_out/infer", content=orjson.dumps(head))
    dhl = int(direct.headers["inference-header-content-length"])
    assert direct.content[dhl:] == r.content[hl:]   # the same BYTES encoding, byte for byte


def test_v1_named_inputs(stack: tuple[TritonServer, GatewayProcess]) -> None:
    _, gw = stack
    x = _inputs("text_ids", 1, seed=9, seq=7)
    body = {"model": "text_ids", "unit_id": "u1",
            "inputs": {"INPUT_IDS": x["INPUT_IDS"][0].tolist(), "ATTENTION_MASK": x["ATTENTION_MASK"][0].tolist()}}
    r = httpx.post(f"{gw.url}/v1/infer", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"]["POOLED"], FORWARD["text_ids"](x)["POOLED"][0], rtol=1e-6)
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "bytes_len", "unit_id": "u", "inputs": {"TEXT": ["héllo"]}})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["SCORE"] == pytest.approx([len("héllo".encode()) + sum("héllo".encode()) / 1000])
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "two_out", "unit_id": "u", "inputs": {"X": [0, 3, 1, 2]}})
    assert r.json()["outputs"]["LABEL"] == ["class-1"] and r.json()["outputs"]["TOP"] == [1]
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "nobatch", "unit_id": "u",
                                               "inputs": {"X": [[1, -2, 3], [-4, 5, -6]]}})
    assert r.json()["outputs"] == {"Y": [[1, -4], [-2, 5], [3, -6]],
                                   "POSITIVE": [[True, False, True], [False, True, False]]}


def test_variable_lengths_batch_only_with_their_shape(stack: tuple[TritonServer, GatewayProcess]) -> None:
    """Concurrent requests of different sequence lengths: each answer is its own (a faked
    ragged batch would pad or mix rows)."""
    import concurrent.futures as cf
    _, gw = stack
    cases = [_inputs("text_ids", 1 + i % 3, seed=i, seq=3 + i % 4) for i in range(24)]
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: _infer(gw.url.removeprefix("http://"), "text_ids", x, True), cases))
    for x, res in zip(cases, results):
        np.testing.assert_array_equal(res.as_numpy("POOLED"), FORWARD["text_ids"](x)["POOLED"])


def _bad(gw: GatewayProcess, model: str, head: dict, binary: bytes = b"") -> dict:
    body = orjson.dumps(head)
    headers = {"x-unit-id": "bad"}
    if binary:
        headers["inference-header-content-length"] = str(len(body))
    r = httpx.post(f"{gw.url}/v2/models/{model}/infer", content=body + binary, headers=headers)
    assert r.status_code == 400, r.text
    return r.json()


def test_bad_inputs_are_400_naming_the_input(stack: tuple[TritonServer, GatewayProcess]) -> None:
    triton, gw = stack
    before = _triton_requests(triton)
    ids = {"name": "INPUT_IDS", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]}
    mask = {"name": "ATTENTION_MASK", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}
    e = _bad(gw, "text_ids", {"inputs": [ids]})
    assert e["error"] == "invalid_field" and "missing input(s) ['ATTENTION_MASK']" in e["message"]
    e = _bad(gw, "text_ids", {"inputs": [ids, {**mask, "datatype": "INT32"}]})
    assert "inputs[1].datatype: input 'ATTENTION_MASK': expected INT64" in e["message"]
    e = _bad(gw, "text_ids", {"inputs": [ids, mask, {**mask, "name": "EXTRA"}]})
    assert "unknown input 'EXTRA'" in e["message"]
    e = _bad(gw, "text_ids", {"inputs": [ids, {**mask, "shape": [2, 3], "data": [1] * 6}]})
    assert "batch size" in e["message"]
    e = _bad(gw, "text_ids", {"inputs": [ids, {**mask, "data": [1, 2.5, 1]}]})
    assert "inputs[1].data: input 'ATTENTION_MASK': INT64 values must be integers" in e["message"]
    e = _bad(gw, "echo", {"inputs": [{"name": "IN_INT8", "datatype": "INT8", "shape": [1, 2], "data": [1, 300]}]})
    assert "inputs[0].data: input 'IN_INT8': values must be within INT8 range" in e["message"]
    e = _bad(gw, "image_fp16", {"inputs": [{"name": "IMAGE", "datatype": "FP16", "shape": [1, 3, 8, 7],
                                            "data": [0.0] * 168}]})
    assert "inputs[0].shape: input 'IMAGE': expected [n, 3, 8, 8]" in e["message"]
    img = {"name": "IMAGE", "datatype": "FP16", "shape": [1, 3, 8, 8], "parameters": {"binary_data_size": 383}}
    e = _bad(gw, "image_fp16", {"inputs": [img]}, b"\0" * 383)
    assert "inputs[0]: input 'IMAGE': FP16 [1, 3, 8, 8] takes 384 bytes, got 383" in e["message"]
    text = {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 7}}
    e = _bad(gw, "bytes_len", {"inputs": [text]}, b"\x09\0\0\0abc")
    assert "inputs[0]: input 'TEXT': BYTES element 0: length 9 runs past the data" in e["message"]
    e = _bad(gw, "bytes_len", {"inputs": [{**text, "parameters": {"binary_data_size": 9}}]}, b"\x03\0\0\0abc")
    assert "run past the binary section" in e["message"]
    e = _bad(gw, "bytes_len", {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [7]}]})
    assert "inputs[0].data: input 'TEXT': BYTES elements must be strings" in e["message"]
    e = _bad(gw, "nobatch", {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1, 2, 3], "data": [0] * 6}]})
    assert "inputs[0].shape: input 'X': expected [2, 3]" in e["message"]
    e = _bad(gw, "two_out", {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}],
                             "outputs": [{"name": "NOPE"}]})
    assert "unknown output 'NOPE'" in e["message"]
    # Non-UTF-8 where a string is expected: the JSON itself is refused.
    r = httpx.post(f"{gw.url}/v1/infer", content=b'{"model":"bytes_len","unit_id":"u","inputs":{"TEXT":["\xff"]}}')
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "text_ids", "unit_id": "u", "inputs": [1, 2, 3]})
    assert r.status_code == 400 and "takes named inputs" in r.json()["message"]
    assert _triton_requests(triton) == before   # nothing reached Triton


def test_triton_refusals_are_400_in_the_same_shape_and_blame_only_the_refused_request(
        stack: tuple[TritonServer, GatewayProcess]) -> None:
    """A model's own refusal (INVALID_ARGUMENT) is the gateway's JSON error; requests batched
    with the refused one are still answered (the batch is retried one request at a time)."""
    import concurrent.futures as cf
    _, gw = stack

    def post(v: float) -> httpx.Response:
        return httpx.post(f"{gw.url}/v1/infer", json={"model": "two_out", "unit_id": "r", "inputs": {"X": [v, 0, 0, 0]}})
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, [1.0, 2e7, 2.0, 3.0] * 6))
    for v, r in zip([1.0, 2e7, 2.0, 3.0] * 6, answers):
        if v > 1e6:
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "triton_refused" and "X must be within [-1e6, 1e6]" in r.json()["message"]
        else:
            assert r.status_code == 200, r.text
    assert post(1.0).status_code == 200   # no replica was ejected for it


def _triton_requests(triton: TritonServer) -> float:
    text = httpx.get(triton.metrics_url).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(("nv_inference_request_success", "nv_inference_request_failure")))


def test_every_model_is_reachable_and_indexed(stack: tuple[TritonServer, GatewayProcess]) -> None:
    _, gw = stack
    index = httpx.post(f"{gw.url}/v2/repository/index").json()
    routes = {m["name"]: m["route"] for m in index}
    assert routes["clf"] == "clf-demo" or routes["clf"]
    assert all(routes[m] == "default" for m in MODELS), routes
    assert all(m["state"] == "READY" for m in index if m["name"] in MODELS)
    meta = httpx.get(f"{gw.url}/v2/models/text_ids").json()
    assert meta["inputs"] == [{"name": "INPUT_IDS", "datatype": "INT64", "shape": [-1, -1]},
                              {"name": "ATTENTION_MASK", "datatype": "INT64", "shape": [-1, -1]}]
    assert meta["parameters"]["experiment"] == "default"
    assert httpx.get(f"{gw.url}/v2/models/nobatch").json()["parameters"]["max_batch_size"] == 0


# -- schemathesis over the test models: the new request shapes ------------------------------

FUZZ_EXAMPLES = 300 if os.environ.get("RUN_SLOW") == "1" else 60


def _any_schema() -> schemathesis.BaseSchema:
    """The gateway's own document, its infer operations only, with the model names pinned to
    the test models (built at import, as in test_fuzz.py; every case goes to the live gateway)."""
    doc = copy.deepcopy(openapi_document())
    doc["paths"] = {p: v for p, v in doc["paths"].items() if p in ("/v1/infer", "/v2/models/{model}/infer")}
    doc["components"]["parameters"]["Model"]["schema"] = {"type": "string", "enum": sorted(MODELS)}
    doc["components"]["schemas"]["V1InferRequest"]["properties"]["model"] = {"type": "string", "enum": sorted(MODELS)}
    s = schemathesis.openapi.from_dict(doc)
    s.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                               max_examples=FUZZ_EXAMPLES)
    return s


ANY_SCHEMA = _any_schema()


@ANY_SCHEMA.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_test_models_conform_to_the_openapi_document(case, stack: tuple[TritonServer, GatewayProcess]) -> None:
    """Generated bodies for the test models (named inputs, every datatype): never a 5xx,
    every answer as documented."""
    _, gw = stack
    response = case.call(base_url=gw.url, timeout=10)
    case.validate_response(response, checks=CHECKS)
