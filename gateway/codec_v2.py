"""KServe v2 / Open Inference Protocol bodies, with Triton's binary tensor extension.

The official `tritonclient.http` client sends inputs and asks for outputs in binary by
default: a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
tensors. Both forms are accepted and answered in kind. The gateway exposes each public
model with the input of its Triton targets (`INPUT` [-1, full width]); a request that
names the entity in its parameters (e.g. `"parameters": {"user_id": 42}`) sends only the
request-side columns and the gateway joins the entity's online features to every row.
The unit id comes from the `unit_id` parameter or the `x-unit-id` header.
"""

from __future__ import annotations

import zlib

import numpy as np
import orjson

from gateway.backend import ModelSpec
from gateway.errors import BadRequest, InvalidField, PayloadTooLarge, UnsupportedMediaType
from gateway.request import InferRequest, InferResult, load_object, unit_id_of

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
    """Parses and renders v2 infer bodies for one public model (its spec fixed at start-up)."""

    __slots__ = ("spec", "full_width", "request_width", "entity_keys", "max_rows", "_np_dtype")

    def __init__(self, spec: ModelSpec, request_width: int, entity_keys: tuple[str, ...],
                 max_rows: int) -> None:
        self.spec, self.full_width, self.request_width = spec, spec.input_width, request_width
        self.entity_keys, self.max_rows = entity_keys, max_rows
        self._np_dtype = np.dtype(np.float32)

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
        rows = self._parse_input(doc.get("inputs"), binary, entity is not None)
        binary_out = self._parse_outputs(doc.get("outputs"), params)
        raw_unit = params.get("unit_id", unit_header)
        if raw_unit is None:
            raise InvalidField("unit_id", "required: a `unit_id` request parameter or an x-unit-id header")
        request_id = doc.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidField("id", "must be a string")
        return InferRequest(model, unit_id_of(raw_unit, "unit_id"), entity, rows,
                            request_id=request_id, binary_output=binary_out)

    def _parse_input(self, inputs: object, binary: memoryview, with_entity: bool) -> np.ndarray:
        spec = self.spec
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise InvalidField("inputs", f"expected exactly one input tensor named {spec.input_name!r}")
        t = inputs[0]
        if t.get("name") != spec.input_name:
            raise InvalidField("inputs[0].name", f"expected {spec.input_name!r}, got {t.get('name')!r}")
        if t.get("datatype") != spec.input_dtype:
            raise InvalidField("inputs[0].datatype", f"expected {spec.input_dtype}, got {t.get('datatype')!r}")
        width = self.request_width if with_entity else self.full_width
        shape = t.get("shape")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
                or shape[1] != width or not 1 <= shape[0] <= self.max_rows):
            raise InvalidField("inputs[0].shape", f"expected [n, {width}] with 1 <= n <= {self.max_rows} "
                               f"({'with' if with_entity else 'without'} an entity), got {shape!r}")
        n = shape[0]
        tparams = t.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            if not isinstance(size, int) or size != n * width * 4:
                raise InvalidField("inputs[0].parameters.binary_data_size", f"expected {n * width * 4} bytes")
            if len(binary) != size:
                raise InvalidField("inputs[0]", f"binary section holds {len(binary)} bytes, expected {size}")
            arr = np.frombuffer(binary, dtype=self._np_dtype).reshape(n, width)
        else:
            data = t.get("data")
            if not isinstance(data, list):
                raise InvalidField("inputs[0].data", "required (or binary_data_size)")
            try:
                raw = np.array(data)
            except (ValueError, TypeError):
                raise InvalidField("inputs[0].data", "must be a flat or nested list of numbers") from None
            if raw.dtype.kind not in _FLOAT_KINDS or raw.size != n * width:
                raise InvalidField("inputs[0].data", f"expected {n * width} numbers of type {spec.input_dtype}")
            arr = raw.astype(self._np_dtype).reshape(n, width)
        if not np.isfinite(arr).all():
            raise InvalidField("inputs[0].data", "values must be finite")
        return arr

    def _parse_outputs(self, outputs: object, params: dict) -> bool:
        binary = params.get("binary_data_output", False) is True
        if outputs is None:
            return binary
        if not isinstance(outputs, list):
            raise InvalidField("outputs", "must be a list")
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or o.get("name") != self.spec.output_name:
                raise InvalidField(f"outputs[{i}].name", f"this model has one output, {self.spec.output_name!r}")
            p = o.get("parameters") or {}
            binary = binary or (isinstance(p, dict) and p.get("binary_data") is True)
        return binary

    def render(self, req: InferRequest, res: InferResult) -> tuple[bytes, int | None]:
        """Return the body and, for a binary answer, the JSON header's length."""
        out = res.outputs
        tensor: dict = {"name": self.spec.output_name, "datatype": self.spec.output_dtype,
                        "shape": list(out.shape)}
        doc: dict = {"model_name": req.model, "model_version": res.model_version,
                     "parameters": {"experiment": res.experiment, "variant": res.variant},
                     "outputs": [tensor]}
        if req.request_id is not None:
            doc["id"] = req.request_id
        if res.timings is not None:
            doc["parameters"]["timings_ms"] = orjson.dumps(res.timings).decode()
        if not req.binary_output:
            tensor["data"] = out.ravel()
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), None
        raw = out.tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        head = orjson.dumps(doc)
        return head + raw, len(head)
