"""Triton over gRPC: one long-lived channel per endpoint, raw tensors in and out.

Builds `ModelInferRequest` protobufs directly from tritonclient's generated stubs (the
helper classes cost CPU we do not need once requests are batched). gRPC errors become the
gateway's own in `translate`, called by the replica pool at this edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import DeadlineExceeded, GatewayError, ModelUnavailable, TritonRefused
from gateway.tensors import DTYPES, TensorSpec, parse_bytes, to_binary

_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """A Triton model's contract, read from its metadata and config at start-up and on every
    (re)load: every input and output (name, datatype, dims without the batch dimension, -1
    for a variable one) and `max_batch_size` (0: not batchable, one request per call)."""

    name: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    # Triton's dynamic-batching `max_queue_delay_microseconds` (0 without one): how long a call
    # may sit in Triton's queue waiting for company. The batcher joins calls inside it.
    queue_delay_s: float = 0.0

    @property
    def batchable(self) -> bool:
        return self.max_batch_size > 0

    @property
    def simple(self) -> bool:
        """Today's demo shape: one FP32 input of fixed width (rows x width), batchable. The
        codecs keep a fast path for it."""
        return (self.batchable and len(self.inputs) == 1 and self.inputs[0].datatype == "FP32"
                and len(self.inputs[0].dims) == 1 and self.inputs[0].dims[0] > 0)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def tensors(self) -> tuple:
        """What two targets behind one public model must agree on."""
        return (tuple((t.name, t.datatype, t.dims) for t in self.inputs),
                tuple((t.name, t.datatype, t.dims) for t in self.outputs), self.batchable)

    def refusal(self) -> str | None:
        """Why the gateway cannot serve this model, or None (checked when its spec is read)."""
        if not self.inputs or not self.outputs:
            return f"model {self.name!r}: no inputs or no outputs in its metadata"
        for role, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                if t.datatype not in DTYPES:
                    return (f"model {self.name!r}: {role} {t.name} is {t.datatype}; the gateway serves "
                            f"{', '.join(DTYPES)}")
        if len({t.name for t in self.inputs}) != len(self.inputs):
            return f"model {self.name!r}: two inputs share a name"
        return None


def spec_from(model: str, meta: service_pb2.ModelMetadataResponse,
              cfg: service_pb2.ModelConfigResponse) -> ModelSpec:
    """A ModelSpec from Triton's answers (metadata shapes carry the batch dimension as -1
    when the model is batchable)."""
    batch = int(cfg.config.max_batch_size)

    def tensor(t: object) -> TensorSpec:
        shape = tuple(int(d) for d in t.shape)  # type: ignore[attr-defined]
        return TensorSpec(t.name, t.datatype, shape[1:] if batch > 0 and shape else shape)  # type: ignore[attr-defined]

    return ModelSpec(name=model, versions=tuple(meta.versions), inputs=tuple(tensor(t) for t in meta.inputs),
                     outputs=tuple(tensor(t) for t in meta.outputs), max_batch_size=batch,
                     queue_delay_s=_queue_delay_s(cfg.config))


def _queue_delay_s(config: object) -> float:
    if not config.HasField("dynamic_batching"):  # type: ignore[attr-defined]
        return 0.0
    return config.dynamic_batching.max_queue_delay_microseconds / 1e6  # type: ignore[attr-defined]


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
        """Read a model's metadata and config; refuse what the gateway cannot serve."""
        try:
            meta = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=model), timeout=timeout)
            cfg = await self._stub.ModelConfig(
                service_pb2.ModelConfigRequest(name=model), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, model) from exc
        spec = spec_from(model, meta, cfg)
        refusal = spec.refusal()
        if refusal is not None:
            raise ModelUnavailable(refusal)
        return spec

    async def repository_index(self, timeout: float = 5.0) -> list[dict]:
        """Triton's repository index: every model it knows, loaded or not."""
        try:
            resp = await self._stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "repository index") from exc
        return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                for m in resp.models]

    async def infer(self, req: service_pb2.ModelInferRequest, timeout: float) -> service_pb2.ModelInferResponse:
        """One ModelInfer call; gRPC errors propagate (the replica pool decides what they mean)."""
        return await self._stub.ModelInfer(req, timeout=timeout)


class RequestTemplate:
    """Everything constant about a target's ModelInferRequest, built once; `build(inputs)`
    fills in a batch (named arrays) and `decode(resp)` reads every output back by name."""

    __slots__ = ("spec", "version", "label", "_requested", "_inputs")

    def __init__(self, spec: ModelSpec, version: str) -> None:
        self.spec, self.version = spec, version
        self.label = f"{spec.name}:{version or 'latest'}"
        # Every output, always: a batch mixes requests that select different outputs.
        self._requested = [service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=t.name)
                           for t in spec.outputs]
        self._inputs = tuple((t.name, t.datatype) for t in spec.inputs)

    def build(self, inputs: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
        req = service_pb2.ModelInferRequest(model_name=self.spec.name, model_version=self.version,
                                            outputs=self._requested)
        for name, datatype in self._inputs:
            x = inputs[name]
            tensor = req.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(x.shape)
            req.raw_input_contents.append(to_binary(x))
        return req

    def decode(self, resp: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        raw = resp.raw_output_contents
        for i, t in enumerate(resp.outputs):
            shape = tuple(t.shape)
            if t.datatype == "BYTES":
                n = 1
                for d in shape:
                    n *= d
                out[t.name] = parse_bytes(t.name, raw[i], n).reshape(shape)
            else:
                out[t.name] = np.frombuffer(raw[i], dtype=DTYPES[t.datatype]).reshape(shape)
        return out


_UNLOADED = re.compile(r"unknown model|not found|not ready|unavailable", re.I)

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
    if code == grpc.StatusCode.INVALID_ARGUMENT and not _UNLOADED.search(exc.details() or ""):
        # Triton refused the request itself (the gateway checks inputs first; a model may
        # check more): the caller's fault, in the same JSON error shape.
        return TritonRefused(f"{what}: Triton refused the request: {exc.details()}")
    # NOT_FOUND / INVALID_ARGUMENT for an unloaded model, INTERNAL for a model that raised.
    return ModelUnavailable(f"{what}: Triton answered {code.name}: {exc.details()}")
