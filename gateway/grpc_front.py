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
from gateway.tensors import FLOATS, check_shape, from_binary, to_binary
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


# Typed `contents` fields by datatype (FP16 has none: raw_input_contents only).
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _to_request(msg: service_pb2.ModelInferRequest, codecs: Mapping[str, V2Codec],
                unit_header: str | None) -> InferRequest:
    """An `InferRequest` from a ModelInferRequest: every named input, any datatype, the
    tensors in `raw_input_contents` (one entry per input, in order) or in typed `contents`;
    checked against the model's contract by `V2Codec.request`, as a parsed HTTP body is."""
    model = msg.model_name
    codec = codecs.get(model)
    if codec is None:
        raise E.UnknownModel(f"model {model!r} is not served here")
    if msg.model_version:
        raise E.InvalidField("model_version", "the experiment picks the version: leave it empty")
    spec, params = codec.spec, msg.parameters
    entity = {k: _param(params[k]) for k in codec.entity_keys if k in params} or None
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise E.InvalidField("raw_input_contents", f"expected one entry per input ({len(msg.inputs)}), got {len(raw)}")
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(msg.inputs):
        where = f"inputs[{i}]"
        ts = spec.input(t.name)
        if ts is None:
            raise E.InvalidField(f"{where}.name", f"unknown input {t.name!r}; the model takes "
                                 f"{[x.name for x in spec.inputs]}")
        if t.name in arrays:
            raise E.InvalidField(f"{where}.name", f"input {t.name!r} given twice")
        if t.datatype != ts.datatype:
            raise E.InvalidField(f"{where}.datatype", f"input {t.name!r}: expected {ts.datatype}, got {t.datatype!r}")
        dims = codec.public.request_dims(ts, entity is not None)
        if dims is None:
            raise E.InvalidField(f"{where}.name", f"input {t.name!r} is joined from the online features; "
                                 "do not send it")
        shape = check_shape(where, [int(d) for d in t.shape], dims, spec.batchable, codec.max_rows)
        if raw:
            if t.HasField("contents"):
                raise E.InvalidField(f"{where}.contents",
                                     "give the tensor in contents or in raw_input_contents, not both")
            arr = from_binary(f"raw_input_contents[{i}]", ts.datatype, memoryview(raw[i]), shape)
        else:
            field = _CONTENTS.get(ts.datatype)
            if field is None:
                raise E.InvalidField(f"{where}.contents", f"input {t.name!r}: {ts.datatype} has no typed "
                                     "contents: send it in raw_input_contents")
            values = getattr(t.contents, field)
            count = int(np.prod(shape)) if shape else 1
            if len(values) != count:
                raise E.InvalidField(f"{where}.contents.{field}", f"input {t.name!r}: expected {count} values "
                                     f"for shape {list(shape)} (or the tensor in raw_input_contents), got {len(values)}")
            if ts.datatype == "BYTES":
                arr = np.empty(count, dtype=object)
                arr[:] = list(values)
                arr = arr.reshape(shape)
            else:
                try:
                    arr = np.array(values, dtype=ts.np_dtype).reshape(shape)
                except OverflowError:
                    raise E.InvalidField(f"{where}.contents.{field}",
                                         f"input {t.name!r}: a value is out of {ts.datatype}'s range") from None
                if not np.array_equal(arr, np.asarray(values).reshape(shape)):
                    raise E.InvalidField(f"{where}.contents.{field}",
                                         f"input {t.name!r}: a value is out of {ts.datatype}'s range")
        if ts.datatype in FLOATS and not np.isfinite(arr).all():
            raise E.InvalidField(where, f"input {t.name!r}: values must be finite")
        arrays[t.name] = arr
    outputs = None
    if msg.outputs:
        names = [o.name for o in msg.outputs]
        known = {o.name for o in spec.outputs}
        for i, n in enumerate(names):
            if n not in known:
                raise E.InvalidField(f"outputs[{i}].name", f"unknown output {n!r}; the model gives "
                                     f"{[o.name for o in spec.outputs]}")
        outputs = tuple(dict.fromkeys(names))
    raw_unit = _param(params["unit_id"]) if "unit_id" in params else unit_header
    if raw_unit is None:
        raise E.InvalidField("unit_id", "required: a `unit_id` request parameter or x-unit-id metadata")
    return codec.request(model, unit_id_of(raw_unit, "unit_id"), arrays, entity=entity, outputs=outputs,
                         request_id=msg.id or None)


def _to_response(req: InferRequest, res: InferResult, codec: V2Codec) -> service_pb2.ModelInferResponse:
    """The answer as Triton's gRPC front gives it: each output (the requested ones, in the
    order asked; else all, in the model's order) in `raw_output_contents`."""
    resp = service_pb2.ModelInferResponse(model_name=req.model, model_version=res.model_version,
                                          id=req.request_id or "")
    resp.parameters["experiment"].string_param = res.experiment
    resp.parameters["variant"].string_param = res.variant
    spec = codec.spec
    tensors = spec.outputs if req.outputs is None else [spec.output(n) for n in req.outputs]
    for t in tensors:
        out = res.outputs[t.name]
        tensor = resp.outputs.add()
        tensor.name, tensor.datatype = t.name, t.datatype
        tensor.shape.extend(out.shape)
        resp.raw_output_contents.append(to_binary(out))
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
            inputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape(spec.batchable)) for t in spec.inputs],
            outputs=[tm(name=t.name, datatype=t.datatype, shape=t.shape(spec.batchable)) for t in spec.outputs])

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
