"""The KServe v2 gRPC front: `GRPCInferenceService` on its own port, beside the HTTP front.

A `grpc.aio` server in the HTTP front's process and event loop, started by the gateway's
lifespan once the components are up and stopped (in-flight calls answered) before they drain.
It speaks the service the official `tritonclient.grpc` uses (the generated stubs shipped in
`tritonclient.grpc`): ServerLive, ServerReady, ServerMetadata, ModelMetadata, ModelReady and
ModelInfer, with the tensor in `raw_input_contents` or in typed `contents`; every other RPC of
the service answers UNIMPLEMENTED (the generated base class).

Behind the wire everything is the HTTP front's: the same admission (`gateway/admission.py`:
one adaptive limiter for both fronts; `x-priority` metadata), pipeline (routing, features,
micro-batching, metrics) and error codes. The unit id comes from the `unit_id` request
parameter or the `x-unit-id` metadata; an entity from the parameters named by the feature
reader (e.g. `user_id`). The request's deadline is the call's gRPC deadline (the
default timeout without one), shortened by `x-request-timeout-ms` metadata if given, capped at
`max_timeout_ms`. A `GatewayError` ends the call with the gRPC status of its code (`STATUS`)
and the details `"<code>: <message>"`; the code is also in the trailing metadata `error-code`
(and `retry-after` where HTTP would send the header).

`_to_request` and `_to_response` are the only places that know the tensor layout.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway import errors as E
from gateway.admission import DEADLINE_FLOOR, LIMIT
from gateway.codec_v2 import V2Codec
from gateway.request import InferRequest, InferResult, unit_id_of
from gateway.routes import SERVER_NAME, SERVER_VERSION
from httpcommon.errors import CODES, RETRY_AFTER_S

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("infergate.grpc")

_BY_HTTP = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
            404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
            409: grpc.StatusCode.ABORTED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
            415: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
            500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}
_BY_CODE = {"deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED}
# One gRPC status (and trailing metadata) per error code of the one list, built once.
STATUS: dict[str, tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]] = {
    code: (_BY_CODE.get(code) or _BY_HTTP[c.status],
           (("error-code", code),) + ((("retry-after", str(RETRY_AFTER_S)),) if c.retry_after else ()))
    for code, c in CODES.items()}
_WANTED = {"x-unit-id": 0, "x-request-timeout-ms": 1, "x-variant-override": 2, "authorization": 3,
           "x-priority": 4}


def _param(p: service_pb2.InferParameter) -> object:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _to_request(msg: service_pb2.ModelInferRequest, codecs: Mapping[str, V2Codec],
                unit_header: str | None) -> InferRequest:
    """Today's `InferRequest` (one FP32 input of rows x width) from a ModelInferRequest."""
    model = msg.model_name
    codec = codecs.get(model)
    if codec is None:
        raise E.UnknownModel(f"model {model!r} is not served here")
    if msg.model_version:
        raise E.InvalidField("model_version", "the experiment picks the version: leave it empty")
    spec, params = codec.spec, msg.parameters
    entity = {k: _param(params[k]) for k in codec.entity_keys if k in params} or None
    if len(msg.inputs) != 1:
        raise E.InvalidField("inputs", f"expected exactly one input tensor named {spec.input_name!r}")
    t = msg.inputs[0]
    if t.name != spec.input_name:
        raise E.InvalidField("inputs[0].name", f"expected {spec.input_name!r}, got {t.name!r}")
    if t.datatype != spec.input_dtype:
        raise E.InvalidField("inputs[0].datatype", f"expected {spec.input_dtype}, got {t.datatype!r}")
    width = codec.request_width if entity is not None else codec.full_width
    shape = t.shape
    if len(shape) != 2 or shape[1] != width or not 1 <= shape[0] <= codec.max_rows:
        raise E.InvalidField("inputs[0].shape", f"expected [n, {width}] with 1 <= n <= {codec.max_rows} "
                             f"({'with' if entity is not None else 'without'} an entity), got {list(shape)}")
    n = shape[0]
    raw = msg.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise E.InvalidField("raw_input_contents", f"expected one entry per input (1), got {len(raw)}")
        if t.HasField("contents"):
            raise E.InvalidField("inputs[0].contents", "give the tensor in contents or in raw_input_contents, not both")
        data = raw[0]
        if len(data) != n * width * 4:
            raise E.InvalidField("raw_input_contents[0]", f"holds {len(data)} bytes, expected {n * width * 4}")
        rows = np.frombuffer(data, dtype=np.float32).reshape(n, width)
    else:
        values = t.contents.fp32_contents
        if len(values) != n * width:
            raise E.InvalidField("inputs[0].contents.fp32_contents", f"expected {n * width} values "
                                 f"(or the tensor in raw_input_contents), got {len(values)}")
        rows = np.array(values, dtype=np.float32).reshape(n, width)
    if not np.isfinite(rows).all():
        raise E.InvalidField("inputs[0]", "values must be finite")
    for i, o in enumerate(msg.outputs):
        if o.name != spec.output_name:
            raise E.InvalidField(f"outputs[{i}].name", f"this model has one output, {spec.output_name!r}")
    raw_unit = _param(params["unit_id"]) if "unit_id" in params else unit_header
    if raw_unit is None:
        raise E.InvalidField("unit_id", "required: a `unit_id` request parameter or x-unit-id metadata")
    return InferRequest(model, unit_id_of(raw_unit, "unit_id"), entity, rows, request_id=msg.id or None)


def _to_response(req: InferRequest, res: InferResult, codec: V2Codec) -> service_pb2.ModelInferResponse:
    """The answer as Triton's gRPC front gives it: the output tensor in `raw_output_contents`."""
    out = res.outputs
    resp = service_pb2.ModelInferResponse(model_name=req.model, model_version=res.model_version,
                                          id=req.request_id or "")
    resp.parameters["experiment"].string_param = res.experiment
    resp.parameters["variant"].string_param = res.variant
    tensor = resp.outputs.add()
    tensor.name, tensor.datatype = codec.spec.output_name, codec.spec.output_dtype
    tensor.shape.extend(out.shape)
    resp.raw_output_contents.append(out.tobytes())
    return resp


def _refusal(adm: Any, reason: int, timeout_s: float) -> E.GatewayError:
    """The admission's refusal as our error (the HTTP front renders the same codes)."""
    if reason == LIMIT:
        return E.Overloaded("over the gateway's concurrency limit: retry later")
    lim, ms = adm.limiter, timeout_s * 1e3
    if reason == DEADLINE_FLOOR:
        return E.DeadlineExceeded(f"deadline: {ms:g} ms is below this gateway's floor of {lim.floor_s * 1e3:.2f} ms")
    return E.DeadlineExceeded(f"deadline: {ms:g} ms cannot be met: an admitted request takes "
                              f"{lim.estimate_s * 1e3:.2f} ms now")


async def _abort(context: grpc.aio.ServicerContext, err: E.GatewayError) -> None:
    status, trailing = STATUS[err.code]
    await context.abort(status, f"{err.code}: {err.message}", trailing)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs; everything they serve with is the gateway's (`gw.components`)."""

    def __init__(self, gw: "Gateway") -> None:
        self._gw = gw
        self._c = gw.components

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        c = self._c
        return service_pb2.ServerReadyResponse(ready=c.ready and await c.pool.any_ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION,
                                                  extensions=["parameters"])

    def _experiment(self, model: str) -> Any:
        return next((e for e in self._c.routes.router.experiments().values() if e.config.model == model), None)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        codec = self._c.v2.get(request.name)
        if codec is None:
            return await _abort(context, E.UnknownModel(f"model {request.name!r} is not served here"))
        exp, spec = self._experiment(request.name), codec.spec
        tm = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, platform=SERVER_NAME,
            versions=sorted({t.version for t in exp.targets()}) if exp else [],
            inputs=[tm(name=spec.input_name, datatype=spec.input_dtype, shape=[-1, spec.input_width])],
            outputs=[tm(name=spec.output_name, datatype=spec.output_dtype, shape=[-1, spec.output_width])])

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        c = self._c
        if request.name not in c.v2:
            return await _abort(context, E.UnknownModel(f"model {request.name!r} is not served here"))
        exp = self._experiment(request.name)
        targets = exp.targets() if exp else set()
        ok = c.ready and all([await c.pool.model_ready(t.model, t.version) for t in targets])
        return service_pb2.ModelReadyResponse(ready=ok)

    async def ModelInfer(self, request: service_pb2.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> service_pb2.ModelInferResponse:
        t0 = time.perf_counter()
        gw, c = self._gw, self._c
        if not c.ready:
            c.metrics.rejected_by_code["unavailable"].inc()
            return await _abort(context, E.Unavailable("gateway not ready"))
        meta: list[str | None] = [None, None, None, None, None]
        for key, value in context.invocation_metadata() or ():
            slot = _WANTED.get(key)
            if slot is not None:
                meta[slot] = value
        # The HTTP front's admission (gateway/admission.py): one limiter for both fronts.
        try:
            timeout = self._timeout(context.time_remaining(), meta[1])
        except E.GatewayError as exc:
            c.metrics.rejected_by_code[exc.code].inc()
            return await _abort(context, exc)
        adm = gw.admission
        raw_priority = meta[4].encode() if meta[4] is not None else None
        refused = adm.admit(adm.priority(raw_priority, request.model_name), timeout)
        if refused:
            return await _abort(context, _refusal(adm, refused, timeout))
        ok = False
        try:
            req = _to_request(request, c.v2, meta[0])
            if meta[2] is not None:
                req.override = meta[2]
                req.authenticated = gw._authenticated(meta[3].encode() if meta[3] else None)  # noqa: SLF001
            res = await c.pipeline.infer(req, t0 + timeout)
            ok = True
            return _to_response(req, res, c.v2[req.model])
        except E.GatewayError as exc:
            if exc.status < 500 and not isinstance(exc, E.Overloaded):
                c.metrics.rejected_by_code[exc.code].inc()
            err: E.GatewayError = exc
        except Exception as exc:  # a bug outside the pipeline: logged once, chained
            c.unexpected.report(exc, "grpc ModelInfer", request.model_name)
            err = E.Internal(exc)
        finally:
            gw._limiter.done(t0, ok)  # noqa: SLF001
        return await _abort(context, err)

    def _timeout(self, remaining: float | None, timeout_ms: str | None) -> float:
        gw = self._gw
        budget = gw._default_timeout if remaining is None else remaining  # noqa: SLF001
        if timeout_ms is not None:
            try:
                ms = int(timeout_ms)
            except ValueError:
                raise E.InvalidField("x-request-timeout-ms", "must be an integer") from None
            if ms <= 0:
                raise E.InvalidField("x-request-timeout-ms", "must be positive")
            budget = min(budget, ms / 1e3)
        return min(budget, gw._max_timeout)  # noqa: SLF001


class GRPCFront:
    """The gRPC server: `start()` in the lifespan once the components are up, `stop()` first
    at shutdown. With `reuse_port` (``--workers N``) every worker binds the same port and the
    kernel spreads connections over them; without it a taken port fails the start."""

    def __init__(self, gw: "Gateway", host: str, port: int, *, reuse_port: bool = False) -> None:
        self.host, self.port, self.reuse_port = host, port, reuse_port
        self._gw = gw
        self._server: grpc.aio.Server | None = None

    def __repr__(self) -> str:
        return f"<GRPCFront {self.host}:{self.port} [{'serving' if self._server else 'stopped'}]>"

    async def start(self) -> None:
        limit = self._gw.config.max_body_bytes
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # grpc.aio's own per-call work dominates this front's CPU (a bare echo servicer cost
            # ~300 us/call here); channelz bookkeeping and BDP pings off took ~6 % of it.
            ("grpc.enable_channelz", 0),
            ("grpc.http2.bdp_probe", 0),
        ])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self._gw), server)
        try:
            server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise OSError(f"gRPC front: cannot listen on {self.host}:{self.port}: {exc}") from exc
        await server.start()
        self._server = server
        log.info("gRPC front listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float) -> None:
        """Refuse new calls (UNAVAILABLE), answer those in flight for up to `grace` seconds."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
