"""KServe v2 / Open Inference Protocol bodies, with Triton's binary tensor extension.

The official `tritonclient.http` client sends inputs and asks for outputs in binary by
default: a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
tensors. Both forms are accepted and answered in kind. The gateway exposes each public model
with the inputs and outputs of its Triton targets (any number, any KServe v2 datatype); a
request that names the entity in its parameters (e.g. `"parameters": {"user_id": 42}`) leaves
out what the model's feature join supplies (the feature columns of one input, or a whole
input) and the gateway joins the entity's online features to every row.
The unit id comes from the `unit_id` parameter or the `x-unit-id` header.
"""

from __future__ import annotations

import zlib

import numpy as np
import orjson

from gateway.errors import BadRequest, InvalidField, PayloadTooLarge, UnsupportedMediaType
from gateway.request import InferRequest, InferResult, PublicModel, load_object, unit_id_of
from gateway.tensors import FLOATS, TensorSpec, check_shape, from_binary, from_json, to_binary, to_json

_FLOAT_KINDS = frozenset("fiu")


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a request's Content-Encoding, refusing anything that inflates past `limit`."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"content-encoding {encoding!r} is not supported")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
    # Only a complete stream has had its checksum and length verified.
    if not d.eof:
        raise BadRequest(f"{encoding} body is truncated")
    if d.unused_data:
        raise BadRequest(f"{encoding} body has data after the end of the stream")
    return out


class V2Codec:
    """Parses and renders v2 infer bodies for one public model (its contract fixed when the
    targets' specs are read: at start-up and on every reload).

    Any number of named inputs and outputs, every KServe v2 datatype, JSON `data` or binary
    sections (`binary_data_size`, consumed in the order of `inputs`), `outputs` selection
    with per-output `binary_data` (default: the request's `binary_data_output`), as Triton
    does. A one-FP32-input model (the demo's) keeps its own short parse (`_parse_simple`).
    """

    __slots__ = ("public", "spec", "entity_keys", "max_rows", "_batchable", "_simple", "_out_dtype",
                 "_out_names", "_in_names", "_np_dtype", "_simple_name", "_widths")

    def __init__(self, public: PublicModel) -> None:
        spec = public.spec
        self.public, self.spec = public, spec
        self.entity_keys, self.max_rows = public.entity_keys, public.max_rows
        self._batchable = spec.batchable
        self._simple = spec.simple
        self._out_dtype = {t.name: t.datatype for t in spec.outputs}
        self._out_names = tuple(t.name for t in spec.outputs)
        self._in_names = tuple(t.name for t in spec.inputs)
        self._np_dtype = np.dtype(np.float32)
        self._simple_name = spec.inputs[0].name if self._simple else None
        if self._simple:
            t = spec.inputs[0]
            self._widths = (t.dims[0], public.request_dims(t, True)[0] if public.request_dims(t, True) else 0)
        else:
            self._widths = (0, 0)

    def __repr__(self) -> str:
        return f"<V2Codec {self.public.name} inputs={list(self._in_names)} outputs={list(self._out_names)}>"

    def parse(self, model: str, body: bytes, header_length: int | None, unit_header: str | None) -> InferRequest:
        if header_length is not None:
            if header_length < 0 or header_length > len(body):
                raise InvalidField("inference-header-content-length", "exceeds the body length")
            head, binary = body[:header_length], memoryview(body)[header_length:]
        else:
            head, binary = body, memoryview(b"")
        doc = load_object(head, "inference header")
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidField("parameters", "must be an object")
        entity = {k: params[k] for k in self.entity_keys if k in params} or None
        inputs = doc.get("inputs")
        if self._simple and isinstance(inputs, list) and len(inputs) == 1:
            arrays = self._parse_simple(inputs[0], binary, entity is not None)
        else:
            arrays = self._parse_inputs(inputs, binary, entity is not None)
        outputs, binary_out = self._parse_outputs(doc.get("outputs"), params)
        raw_unit = params.get("unit_id", unit_header)
        if raw_unit is None:
            raise InvalidField("unit_id", "required: a `unit_id` request parameter or an x-unit-id header")
        request_id = doc.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidField("id", "must be a string")
        return InferRequest(model, unit_id_of(raw_unit, "unit_id"), entity, arrays, outputs=outputs,
                            binary=binary_out, request_id=request_id)

    def request(self, model: str, unit_id: str, arrays: dict[str, np.ndarray], *, entity: dict | None = None,
                outputs: tuple[str, ...] | None = None, request_id: str | None = None) -> InferRequest:
        """An InferRequest from arrays another front decoded itself (e.g. gRPC), checked against
        the same contract as a parsed body: names, datatypes, shapes."""
        want = {t.name: t for t in self.spec.inputs}
        checked: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            t = want.get(name)
            if t is None:
                raise InvalidField(f"inputs.{name}", f"unknown input; the model takes {list(self._in_names)}")
            dims = self.public.request_dims(t, entity is not None)
            if dims is None:
                raise InvalidField(f"inputs.{name}", "is joined from the online features; do not send it")
            if np.dtype(arr.dtype) != t.np_dtype:
                raise InvalidField(f"inputs.{name}.datatype", f"expected {t.datatype}, got {arr.dtype}")
            check_shape(f"inputs.{name}", list(arr.shape), dims, self._batchable, self.max_rows)
            checked[name] = arr
        self._check_complete(checked, entity is not None)
        if outputs is not None:
            self._check_outputs(outputs)
        return InferRequest(model, unit_id, entity, {n: checked[n] for n in self._in_names if n in checked},
                            outputs=outputs, request_id=request_id)

    def _parse_simple(self, t: object, binary: memoryview, with_entity: bool) -> dict[str, np.ndarray]:
        """The demo shape (one FP32 input, rows x width): the short path measured by `make bench`."""
        name = self._simple_name
        if not isinstance(t, dict):
            raise InvalidField("inputs[0]", f"input {name!r}: must be an object")
        if t.get("name") != name:
            raise InvalidField("inputs[0].name", f"unknown input {t.get('name')!r}; the model takes [{name!r}]")
        if t.get("datatype") != "FP32":
            raise InvalidField("inputs[0].datatype", f"input {name!r}: expected FP32, got {t.get('datatype')!r}")
        width = self._widths[1] if with_entity and self.public.join is not None else self._widths[0]
        shape = t.get("shape")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(type(d) is int for d in shape)
                or shape[1] != width or not 1 <= shape[0] <= self.max_rows):
            raise InvalidField("inputs[0].shape", f"input {name!r}: expected [n, {width}] with 1 <= n <= "
                               f"{self.max_rows} ({'with' if with_entity else 'without'} an entity), got {shape!r}")
        n = shape[0]
        tparams = t.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            if type(size) is not int or size != n * width * 4:
                raise InvalidField("inputs[0].parameters.binary_data_size",
                                   f"input {name!r}: expected {n * width * 4} bytes")
            if len(binary) != size:
                raise InvalidField("inputs[0]", f"input {name!r}: binary section holds {len(binary)} bytes, "
                                   f"expected {size}")
            arr = np.frombuffer(binary, dtype=self._np_dtype).reshape(n, width)
        else:
            if len(binary):
                raise InvalidField("inputs[0]", f"input {name!r}: {len(binary)} binary bytes but no "
                                   "binary_data_size")
            data = t.get("data")
            if not isinstance(data, list):
                raise InvalidField("inputs[0].data", f"input {name!r}: required (or binary_data_size)")
            try:
                raw = np.array(data)
            except (ValueError, TypeError, OverflowError):
                raise InvalidField("inputs[0].data",
                                   f"input {name!r}: must be a flat or nested list of numbers") from None
            if raw.dtype.kind not in _FLOAT_KINDS or raw.size != n * width:
                raise InvalidField("inputs[0].data", f"input {name!r}: expected {n * width} numbers of type FP32")
            with np.errstate(over="ignore", invalid="ignore"):
                arr = raw.astype(self._np_dtype).reshape(n, width)
        if not np.isfinite(arr).all():
            raise InvalidField("inputs[0].data", f"input {name!r}: values must be finite")
        return {name: arr}

    def _parse_inputs(self, inputs: object, binary: memoryview, with_entity: bool) -> dict[str, np.ndarray]:
        if not isinstance(inputs, list) or not inputs:
            raise InvalidField("inputs", f"required: a list of input tensors ({', '.join(self._in_names)})")
        by_name = {t.name: t for t in self.spec.inputs}
        got: dict[str, np.ndarray] = {}
        offset = 0
        for i, t in enumerate(inputs):
            if not isinstance(t, dict):
                raise InvalidField(f"inputs[{i}]", "must be an object")
            name = t.get("name")
            ts = by_name.get(name) if isinstance(name, str) else None
            if ts is None:
                raise InvalidField(f"inputs[{i}].name", f"unknown input {name!r}; the model takes "
                                   f"{list(self._in_names)}")
            try:
                got[name] = self._parse_one(f"inputs[{i}]", t, by_name[name], got, binary, offset, with_entity)
            except InvalidField as exc:   # the same path, the input named in the problem
                raise InvalidField(exc.field, f"input {name!r}: {exc.problem}") from None
            size = (t.get("parameters") or {}).get("binary_data_size")
            offset += size if type(size) is int else 0
        if offset != len(binary):
            raise InvalidField("inputs", f"the binary section holds {len(binary)} bytes; the inputs' "
                               f"binary_data_size add up to {offset}")
        self._check_complete(got, with_entity)
        return {n: got[n] for n in self._in_names if n in got}

    def _parse_one(self, where: str, t: dict, ts: TensorSpec, got: dict, binary: memoryview, offset: int,
                   with_entity: bool) -> np.ndarray:
        name = ts.name
        if name in got:
            raise InvalidField(where, "sent twice")
        dims = self.public.request_dims(ts, with_entity)
        if dims is None:
            raise InvalidField(where, "is joined from the online features; do not send it with an entity")
        if t.get("datatype") != ts.datatype:
            raise InvalidField(f"{where}.datatype", f"expected {ts.datatype}, got {t.get('datatype')!r}")
        shape = check_shape(where, t.get("shape"), dims, self._batchable, self.max_rows)
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise InvalidField(f"{where}.parameters", "must be an object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise InvalidField(f"{where}.parameters.binary_data_size", "must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidField(f"{where}.parameters.binary_data_size",
                                   f"{size} bytes at offset {offset} run past the binary section "
                                   f"({len(binary)} bytes)")
            arr = from_binary(where, ts.datatype, binary[offset:offset + size], shape)
        else:
            arr = from_json(where, ts.datatype, t.get("data"), shape)
        if ts.datatype in FLOATS and not np.isfinite(arr).all():
            raise InvalidField(f"{where}.data", "values must be finite")
        return arr

    def _check_complete(self, got: dict[str, np.ndarray], with_entity: bool) -> None:
        missing = [t.name for t in self.spec.inputs
                   if t.name not in got and self.public.request_dims(t, with_entity) is not None]
        if missing:
            raise InvalidField("inputs", f"missing input(s) {missing}; the model takes {list(self._in_names)}")
        if self._batchable and len(got) > 1:
            rows = {a.shape[0] for a in got.values()}
            if len(rows) > 1:
                raise InvalidField("inputs", f"inputs disagree on the batch size: "
                                   f"{ {n: a.shape[0] for n, a in got.items()} }")

    def _check_outputs(self, names: tuple[str, ...]) -> None:
        for i, name in enumerate(names):
            if name not in self._out_dtype:
                raise InvalidField(f"outputs[{i}].name", f"unknown output {name!r}; the model has "
                                   f"{list(self._out_names)}")
        if len(set(names)) != len(names):
            raise InvalidField("outputs", "an output is named twice")

    def _parse_outputs(self, outputs: object, params: dict) -> tuple[tuple[str, ...] | None, frozenset[str]]:
        default = params.get("binary_data_output", False) is True
        if outputs is None:
            return None, frozenset(self._out_names) if default else frozenset()
        if not isinstance(outputs, list):
            raise InvalidField("outputs", "must be a list")
        names, binary = [], set()
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidField(f"outputs[{i}].name", f"required; the model has {list(self._out_names)}")
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise InvalidField(f"outputs[{i}].parameters", "must be an object")
            if p.get("classification") is not None:
                raise InvalidField(f"outputs[{i}].parameters.classification", "is not supported by the gateway")
            names.append(o["name"])
            if p.get("binary_data", default) is True:
                binary.add(o["name"])
        self._check_outputs(tuple(names))
        return tuple(names), frozenset(binary)

    def render(self, req: InferRequest, res: InferResult) -> tuple[bytes, int | None]:
        """Return the body and, when an output is binary, the JSON header's length."""
        tensors = []
        raws = []
        for name in req.outputs or self._out_names:
            out = res.outputs[name]
            tensor: dict = {"name": name, "datatype": self._out_dtype[name], "shape": list(out.shape)}
            if name in req.binary:
                raw = to_binary(out)
                tensor["parameters"] = {"binary_data_size": len(raw)}
                raws.append(raw)
            else:
                tensor["data"] = to_json(out)
            tensors.append(tensor)
        doc: dict = {"model_name": req.model, "model_version": res.model_version,
                     "parameters": {"experiment": res.experiment, "variant": res.variant},
                     "outputs": tensors}
        if req.request_id is not None:
            doc["id"] = req.request_id
        if res.timings is not None:
            doc["parameters"]["timings_ms"] = orjson.dumps(res.timings).decode()
        head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        if not raws:
            return head, None
        return head + b"".join(raws), len(head)
