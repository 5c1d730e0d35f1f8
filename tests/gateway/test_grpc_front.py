"""The KServe v2 gRPC front against a real Triton, in a real gateway process.

The official `tritonclient.grpc` client, unchanged; answers compared byte for byte with
Triton's own gRPC port; routing compared with the HTTP front's; bad input refused with our
codes before anything reaches Triton; deadlines; a drain at SIGTERM; `--workers 2`.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from faults.proxy import FaultProxy
from runtime.modelgen import INPUT_WIDTH, load_weights, reference_forward
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env
from tests.gateway.test_workers import _ready_everywhere, _served_by, _wait_for, _workers

_X = np.random.default_rng(11).standard_normal((8, INPUT_WIDTH)).astype(np.float32)
CODE = re.compile(r"^([a-z_]+): ")


@pytest.fixture(scope="module")
def gw(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("grpc") / "gateway.log"
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--log-level", "info"], env=gateway_env(),
                        log_path=log, grpc_port=free_port()) as g:
        yield g


@pytest.fixture(scope="module")
def stub(gw: GatewayProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gw.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _client_input(x: np.ndarray) -> tg.InferInput:
    inp = tg.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _request(x: np.ndarray | None = None, unit: str | None = "u-1", *, typed: bool = False,
             model: str = "clf") -> service_pb2.ModelInferRequest:
    x = _X[:2] if x is None else x
    req = service_pb2.ModelInferRequest(model_name=model)
    if unit is not None:
        req.parameters["unit_id"].string_param = unit
    t = req.inputs.add(name="INPUT", datatype="FP32", shape=list(x.shape))
    if typed:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        req.raw_input_contents.append(x.tobytes())
    return req


def _triton_inferences(triton: TritonServer) -> float:
    text = httpx.get(triton.metrics_url, timeout=5).text
    return sum(float(v) for v in re.findall(
        r'^nv_inference_request_(?:success|failure)\{[^}]*model="clf"[^}]*\} (\S+)$', text, re.M))


def _gateway_counter(gw: GatewayProcess, name: str, label: str = "") -> float:
    """The sum of a counter's series (those whose labels contain `label`)."""
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    return sum(float(v) for labels, v in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
               if label in labels)


def test_official_client_health_and_metadata(gw: GatewayProcess) -> None:
    client = tg.InferenceServerClient(gw.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("clf")
        meta = client.get_model_metadata("clf")
        assert meta.name == "clf" and sorted(meta.versions) == ["1", "2"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("INPUT", "FP32", [-1, INPUT_WIDTH])]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("PROBS", "FP32", [-1, 4])]
        assert client.get_server_metadata().name == "infergate"
        for call in (lambda: client.get_model_metadata("nope"), lambda: client.is_model_ready("nope")):
            with pytest.raises(tg.InferenceServerException) as exc:
                call()
            assert exc.value.status() == "StatusCode.NOT_FOUND" and exc.value.message().startswith("model_not_found: ")
    finally:
        client.close()


def test_outputs_are_byte_identical_to_tritons_own_grpc(gw: GatewayProcess, triton: TritonServer,
                                                      stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """Raw and typed contents, through the official client and the bare stub: the same bytes as
    Triton's gRPC port gives for the version the gateway routed to (one request at a time, so
    the batch Triton computes is the same rows)."""
    ours, theirs = tg.InferenceServerClient(gw.grpc_url), tg.InferenceServerClient(triton.grpc_url)
    seen: set[str] = set()
    n_ok = 0
    before = _gateway_counter(gw, "infergate_requests_total")
    try:
        for i in range(12):
            x = _X[: 1 + i % 3]
            res = ours.infer("clf", [_client_input(x)], parameters={"unit_id": f"bytes-{i}"}, request_id=f"r{i}")
            resp = res.get_response()
            assert resp.id == f"r{i}" and resp.model_name == "clf"
            version = resp.model_version
            seen.add(resp.parameters["variant"].string_param)
            direct = theirs.infer("clf", [_client_input(x)], model_version=version)
            assert res.as_numpy("PROBS").tobytes() == direct.as_numpy("PROBS").tobytes()
            np.testing.assert_allclose(res.as_numpy("PROBS"), reference_forward(load_weights(int(version)), x),
                                       rtol=1e-5, atol=1e-6)
            typed = stub.ModelInfer(_request(x, f"bytes-{i}", typed=True), timeout=5)
            assert typed.model_version == version  # the same unit, the same variant
            assert typed.raw_output_contents[0] == direct.as_numpy("PROBS").tobytes()
            assert list(typed.outputs[0].shape) == [x.shape[0], 4]
            n_ok += 2
    finally:
        ours.close()
        theirs.close()
    assert seen == {"a", "b"}
    assert _gateway_counter(gw, "infergate_requests_total") - before == n_ok


def test_routing_matches_the_http_front(gw: GatewayProcess, stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """The unit id from a parameter or from `x-unit-id` metadata gets HTTP's variant."""
    with httpx.Client(base_url=gw.url) as http:
        for i in range(30):
            unit = f"route-{i}"
            want = http.post("/v1/infer", json={"model": "clf", "unit_id": unit, "inputs": _X[0].tolist()}).json()
            by_param = stub.ModelInfer(_request(_X[:1], unit), timeout=5)
            by_meta = stub.ModelInfer(_request(_X[:1], None), metadata=[("x-unit-id", unit)], timeout=5)
            for got in (by_param, by_meta):
                assert got.parameters["variant"].string_param == want["variant"]
                assert got.model_version == want["model_version"]


def _with(req: service_pb2.ModelInferRequest, edit) -> service_pb2.ModelInferRequest:
    edit(req)
    return req


BAD = {
    "dtype": (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "INVALID_ARGUMENT", "invalid_field",
              "inputs[0].datatype"),
    "shape": (lambda r: r.inputs[0].shape.__setitem__(1, 19), "INVALID_ARGUMENT", "invalid_field", "inputs[0].shape"),
    "rank": (lambda r: r.inputs[0].shape.append(1), "INVALID_ARGUMENT", "invalid_field", "inputs[0].shape"),
    "too_many_rows": (lambda r: r.inputs[0].shape.__setitem__(0, 100_000), "INVALID_ARGUMENT", "invalid_field",
                      "inputs[0].shape"),
    "byte_count": (lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-4]), "INVALID_ARGUMENT",
                   "invalid_field", "raw_input_contents[0]"),
    "two_raw": (lambda r: r.raw_input_contents.append(b"\0" * 8), "INVALID_ARGUMENT", "invalid_field",
                "raw_input_contents"),
    "raw_and_typed": (lambda r: r.inputs[0].contents.fp32_contents.extend([0.0] * 40), "INVALID_ARGUMENT",
                      "invalid_field", "inputs[0].contents"),
    "missing_input": (lambda r: (r.ClearField("inputs"), r.ClearField("raw_input_contents")), "INVALID_ARGUMENT",
                      "invalid_field", "inputs"),
    "missing_data": (lambda r: r.ClearField("raw_input_contents"), "INVALID_ARGUMENT", "invalid_field",
                     "inputs[0].contents.fp32_contents"),
    "input_name": (lambda r: setattr(r.inputs[0], "name", "X"), "INVALID_ARGUMENT", "invalid_field", "inputs[0].name"),
    "not_finite": (lambda r: r.raw_input_contents.__setitem__(0, np.full(40, np.inf, np.float32).tobytes()),
                   "INVALID_ARGUMENT", "invalid_field", "inputs[0]"),
    "output_name": (lambda r: r.outputs.add(name="LOGITS"), "INVALID_ARGUMENT", "invalid_field", "outputs[0].name"),
    "no_unit": (lambda r: r.parameters.pop("unit_id"), "INVALID_ARGUMENT", "invalid_field", "unit_id"),
    "bool_unit": (lambda r: setattr(r.parameters["unit_id"], "bool_param", True), "INVALID_ARGUMENT",
                  "invalid_field", "unit_id"),
    "version": (lambda r: setattr(r, "model_version", "1"), "INVALID_ARGUMENT", "invalid_field", "model_version"),
    "unknown_model": (lambda r: setattr(r, "model_name", "nope"), "NOT_FOUND", "model_not_found", None),
}


def test_bad_input_is_refused_with_our_code_and_never_reaches_triton(
        gw: GatewayProcess, triton: TritonServer, stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    stub.ModelInfer(_request(), timeout=5)  # warm: whatever a first call costs is done
    triton_before = _triton_inferences(triton)
    rejected_before = _gateway_counter(gw, "infergate_rejected_total")
    for name, (edit, status, code, field) in BAD.items():
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(_with(_request(), edit), timeout=5)
            pytest.fail(f"{name}: answered")
        err = exc.value
        assert err.code().name == status, (name, err.details())
        assert err.details().startswith(f"{code}: " + (f"{field}: " if field else "")), (name, err.details())
        assert ("error-code", code) in err.trailing_metadata(), name
    for meta, field in (([("x-request-timeout-ms", "soon")], "x-request-timeout-ms"),
                        ([("x-request-timeout-ms", "0")], "x-request-timeout-ms")):
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(_request(), metadata=meta, timeout=5)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details().startswith(f"invalid_field: {field}: ")
    assert _triton_inferences(triton) == triton_before, "a refused request reached Triton"
    # Refusals are counted like the HTTP front's (an unknown model is refused before routing too).
    assert _gateway_counter(gw, "infergate_rejected_total") - rejected_before == len(BAD) + 2
    assert stub.ModelInfer(_request(), timeout=5).raw_output_contents  # and it still serves


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.integers(-2, 300), width=st.integers(-1, 25), nbytes=st.integers(-8, 8), dtype=st.sampled_from(
    ["FP32", "FP16", "INT64", "BYTES", ""]), typed=st.booleans(), rank=st.integers(0, 3),
    unit=st.one_of(st.none(), st.text(max_size=300), st.integers(-2**63, 2**63 - 1)),
    entity=st.one_of(st.none(), st.integers(0, 2**63 - 1), st.text(max_size=5)),
    model=st.sampled_from(["clf", "clf ", ""]))
def test_fuzzed_requests_get_an_answer_or_one_of_our_refusals(
        stub: service_pb2_grpc.GRPCInferenceServiceStub, rows: int, width: int, nbytes: int, dtype: str,
        typed: bool, rank: int, unit: object, entity: object, model: str) -> None:
    """Never INTERNAL/UNKNOWN: a 200-equivalent, or a 4xx-class refusal naming one of our codes."""
    n, w = max(rows, 0), max(width, 0)
    req = service_pb2.ModelInferRequest(model_name=model)
    t = req.inputs.add(name="INPUT", datatype=dtype, shape=([rows, width, 1][:rank]))
    data = np.linspace(-1, 1, min(n * w, 5000), dtype=np.float32)
    if typed:
        t.contents.fp32_contents.extend(data.tolist())
    else:
        raw = data.tobytes()
        req.raw_input_contents.append(raw[:max(0, len(raw) + nbytes)] if nbytes < 0 else raw + b"\0" * nbytes)
    if isinstance(unit, str):
        req.parameters["unit_id"].string_param = unit
    elif isinstance(unit, int):
        req.parameters["unit_id"].int64_param = unit
    if isinstance(entity, int):
        req.parameters["user_id"].int64_param = entity
    elif isinstance(entity, str):
        req.parameters["user_id"].string_param = entity
    try:
        resp = stub.ModelInfer(req, timeout=10)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.RESOURCE_EXHAUSTED), (err.code(), err.details())
        if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # gRPC's own message-size refusal
            assert CODE.match(err.details()), err.details()
        return
    assert len(resp.raw_output_contents[0]) == 4 * 4 * list(resp.outputs[0].shape)[0]


@pytest.fixture(scope="module")
def slow_triton(triton: TritonServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", triton.grpc_port), name="grpc-front-triton") as proxy:
        yield proxy


def _start_behind(proxy: FaultProxy, tmp: Path, *args: str) -> GatewayProcess:
    return GatewayProcess(proxy.address, args=["--features", "off", "--log-level", "info", *args], env=gateway_env(),
                          log_path=tmp / "gateway.log", grpc_port=free_port()).start(timeout=90)


@pytest.fixture(scope="module")
def behind(slow_triton: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose Triton is behind the fault proxy."""
    gw = _start_behind(slow_triton, tmp_path_factory.mktemp("grpc-behind"))
    try:
        yield gw
    finally:
        slow_triton.pass_through()
        assert gw.stop() == 0


def test_a_deadline_shorter_than_the_path_ends_in_deadline_exceeded(
        behind: GatewayProcess, slow_triton: FaultProxy) -> None:
    with grpc.insecure_channel(behind.grpc_url) as channel:
        s = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        s.ModelInfer(_request(), timeout=5)
        before = _gateway_counter(behind, "infergate_errors_total", 'reason="deadline_exceeded"')
        slow_triton.latency(0.15)
        try:
            # The gateway's own deadline (metadata shorter than the gRPC deadline): our code.
            t0 = time.perf_counter()
            with pytest.raises(grpc.RpcError) as exc:
                s.ModelInfer(_request(), metadata=[("x-request-timeout-ms", "60")], timeout=5)
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert exc.value.details().startswith("deadline_exceeded: "), exc.value.details()
            assert time.perf_counter() - t0 < 0.3
            # The gRPC deadline is the request's deadline.
            with pytest.raises(grpc.RpcError) as exc:
                s.ModelInfer(_request(), timeout=0.06)
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            slow_triton.pass_through()
        time.sleep(0.4)  # the late answers come back and are dropped
        assert s.ModelInfer(_request(), timeout=5).raw_output_contents
    assert _gateway_counter(behind, "infergate_errors_total", 'reason="deadline_exceeded"') - before >= 1


def test_triton_reset_is_unavailable_with_our_code_then_recovers(
        behind: GatewayProcess, slow_triton: FaultProxy) -> None:
    """The fault suite's contract on this front: Triton's connections reset -> UNAVAILABLE
    `model_unavailable` (never INTERNAL), answered by the deadline; served again once it is back."""
    with grpc.insecure_channel(behind.grpc_url) as channel:
        s = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        s.ModelInfer(_request(), timeout=5)
        slow_triton.reset()
        try:
            codes = []
            for i in range(5):
                t0 = time.perf_counter()
                try:
                    s.ModelInfer(_request(_X[:1], f"reset-{i}"), metadata=[("x-request-timeout-ms", "500")], timeout=5)
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
                    assert CODE.match(err.details()).group(1) in ("model_unavailable", "deadline_exceeded"), \
                        err.details()
                assert time.perf_counter() - t0 < 0.5 + 0.25
            assert set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"} and "UNAVAILABLE" in codes, codes
        finally:
            slow_triton.pass_through()
        deadline = time.monotonic() + 3
        while True:
            try:
                assert s.ModelInfer(_request(), timeout=2).raw_output_contents
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "not served again within 3 s of Triton's return"
                time.sleep(0.1)


def test_sigterm_drains_calls_in_flight_then_refuses(slow_triton: FaultProxy, tmp_path: Path) -> None:
    gw = _start_behind(slow_triton, tmp_path)
    try:
        with grpc.insecure_channel(gw.grpc_url) as channel:
            s = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            s.ModelInfer(_request(), timeout=5)
            slow_triton.latency(0.3)
            calls = [s.ModelInfer.future(_request(_X[:1], f"drain-{i}"), timeout=10) for i in range(16)]
            time.sleep(0.15)  # in the gateway, waiting on Triton
            assert gw.process is not None
            gw.process.send_signal(signal.SIGTERM)
            answers = [c.result() for c in calls]  # every call in flight answered, none cancelled
            assert all(len(a.raw_output_contents[0]) == 16 for a in answers)
            assert gw.process.wait(15) == 0
            with pytest.raises(grpc.RpcError) as exc:
                s.ModelInfer(_request(), timeout=2)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        slow_triton.pass_through()
        gw.stop()


def test_two_workers_share_the_grpc_port(triton: TritonServer, tmp_path: Path) -> None:
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--workers", "2"], env=gateway_env(),
                        log_path=tmp_path / "gw.log", grpc_port=free_port()) as gw:
        _wait_for(lambda: len(_workers(gw)) == 2 and _ready_everywhere(gw), 60, "two ready workers")
        workers = _workers(gw)
        metrics_dir = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
        before = {p.pid: _served_by(metrics_dir, p.pid, tmp_path / "before") for p in workers}
        n = 40
        for i in range(n):  # a fresh connection each (no shared subchannel): SO_REUSEPORT picks the worker
            with grpc.insecure_channel(gw.grpc_url, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                s = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                assert s.ModelInfer(_request(_X[:1], f"w-{i}"), timeout=10).raw_output_contents
        own = {p.pid: _served_by(metrics_dir, p.pid, tmp_path / "after") - before[p.pid] for p in workers}
        assert sum(own.values()) == n and all(own.values()), own  # both served (all on one: p = 2^-39)
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(20) == 0


def test_a_taken_grpc_port_fails_the_start(triton: TritonServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gw = GatewayProcess(triton.grpc_url, args=["--features", "off"], env=gateway_env(),
                            log_path=tmp_path / "gw.log", grpc_port=taken.getsockname()[1])
        with pytest.raises(Exception, match="gateway exited with [1-9]"):
            gw.start(timeout=60)
    assert "gRPC front: cannot listen on 127.0.0.1:" in (tmp_path / "gw.log").read_text()
