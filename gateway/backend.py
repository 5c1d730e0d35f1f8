"""Triton over gRPC: one long-lived channel per endpoint, raw tensors in and out.

Builds `ModelInferRequest` protobufs directly from tritonclient's generated stubs (the
helper classes cost CPU we do not need once requests are batched). gRPC errors become the
gateway's own in `translate`, called by the replica pool at this edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import DeadlineExceeded, GatewayError, ModelUnavailable

_MAX_MESSAGE = 64 * 1024 * 1024
_NP_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
              "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8,
              "BOOL": np.bool_}


@dataclass(frozen=True)
class ModelSpec:
    """What the gateway needs to know of a Triton model, read once at start-up."""

    name: str
    versions: tuple[str, ...]
    input_name: str
    input_dtype: str
    input_width: int
    output_name: str
    output_dtype: str
    output_width: int
    max_batch_size: int

    def refusal(self) -> str | None:
        """Why the gateway cannot serve this model, or None. Rows are read and joined as
        float32 in the codecs and the pipeline, so until any datatype is supported, a model
        whose input or output is not FP32 is refused when its spec is read (at start-up, or
        when an experiment names it), with this reason."""
        for role, name, dtype in (("input", self.input_name, self.input_dtype),
                                  ("output", self.output_name, self.output_dtype)):
            if dtype != "FP32":
                return (f"model {self.name!r}: {role} {name} is {dtype}; the gateway serves FP32 inputs "
                        f"and outputs only")
        return None


class TritonBackend:
    """A gRPC channel to one Triton endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=[
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Reconnect fast after a Triton restart (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"<TritonBackend {self.url}>"

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def is_ready(self, timeout: float = 1.0) -> bool:
        try:
            resp = await self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.ready)

    async def model_ready(self, model: str, version: str = "", timeout: float = 1.0) -> bool:
        try:
            resp = await self._stub.ModelReady(
                service_pb2.ModelReadyRequest(name=model, version=version), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.ready)

    async def model_spec(self, model: str, timeout: float = 5.0) -> ModelSpec:
        """Read a single-input, single-output model's metadata and config."""
        try:
            meta = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=model), timeout=timeout)
            cfg = await self._stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=model), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, model) from exc
        if len(meta.inputs) != 1 or len(meta.outputs) != 1:
            raise ModelUnavailable(f"model {model!r}: the gateway serves single-input, single-output models")
        inp, out = meta.inputs[0], meta.outputs[0]
        spec = ModelSpec(
            name=model, versions=tuple(meta.versions),
            input_name=inp.name, input_dtype=inp.datatype, input_width=int(inp.shape[-1]),
            output_name=out.name, output_dtype=out.datatype, output_width=int(out.shape[-1]),
            max_batch_size=int(cfg.config.max_batch_size))
        refusal = spec.refusal()
        if refusal is not None:
            raise ModelUnavailable(refusal)
        return spec

    async def infer(self, req: service_pb2.ModelInferRequest, timeout: float) -> service_pb2.ModelInferResponse:
        """One ModelInfer call; gRPC errors propagate (the replica pool decides what they mean)."""
        return await self._stub.ModelInfer(req, timeout=timeout)


class RequestTemplate:
    """Everything constant about a target's ModelInferRequest, built once; `build(x)` fills
    in a batch and `decode(resp)` reads the output tensor back."""

    __slots__ = ("spec", "version", "label", "_requested", "_out_dtype")

    def __init__(self, spec: ModelSpec, version: str) -> None:
        self.spec, self.version = spec, version
        self.label = f"{spec.name}:{version or 'latest'}"
        self._requested = [service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=spec.output_name)]
        self._out_dtype = _NP_DTYPES[spec.output_dtype]

    def build(self, x: np.ndarray) -> service_pb2.ModelInferRequest:
        spec = self.spec
        req = service_pb2.ModelInferRequest(model_name=spec.name, model_version=self.version,
                                            outputs=self._requested)
        tensor = req.inputs.add()
        tensor.name, tensor.datatype = spec.input_name, spec.input_dtype
        tensor.shape.extend((x.shape[0], spec.input_width))
        req.raw_input_contents.append(x.tobytes())
        return req

    def decode(self, resp: service_pb2.ModelInferResponse) -> np.ndarray:
        out = resp.outputs[0]
        return np.frombuffer(resp.raw_output_contents[0], dtype=self._out_dtype).reshape(tuple(out.shape))


# A replica failure worth another replica: it is down, slow, or has not loaded the model.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND,
                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED})


def translate(exc: grpc.aio.AioRpcError, what: str) -> GatewayError:
    return _translate(exc, what)


def _translate(exc: grpc.aio.AioRpcError, what: str) -> GatewayError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{what}: Triton did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelUnavailable(f"{what}: Triton unreachable")
    # NOT_FOUND / INVALID_ARGUMENT for an unloaded model, INTERNAL for a model that raised.
    return ModelUnavailable(f"{what}: Triton answered {code.name}: {exc.details()}")
