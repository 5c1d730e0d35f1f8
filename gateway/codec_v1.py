"""`POST /v1/infer`: the gateway's own JSON protocol.

Request:  {"model": "clf", "unit_id": "u-1", "entity": {"user_id": 42},
           "inputs": [4 floats with an entity | the full input vector without], "timings": false}
Response: {"model", "experiment", "variant", "model_version", "outputs": {NAME: [...]},
           "features": {...} (with an entity), "timings_ms": {...} (when asked)}
"""

from __future__ import annotations

import numpy as np
import orjson

from gateway.errors import InvalidField, UnknownModel
from gateway.request import InferRequest, InferResult, ModelShape, load_object, unit_id_of

_NUMBER = (int, float)
_F32_MAX = float(np.finfo(np.float32).max)


class V1Codec:
    """Parses and renders v1 bodies; `shapes` (public model -> widths) is filled at start-up
    and when the router starts serving a new model."""

    __slots__ = ("shapes",)

    def __init__(self, shapes: dict[str, ModelShape]) -> None:
        self.shapes = shapes

    def parse(self, body: bytes) -> InferRequest:
        doc = load_object(body, "body")
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidField("model", "required, a non-empty string")
        shape = self.shapes.get(model)
        if shape is None:
            raise UnknownModel(f"model {model!r} is not served here")
        if "unit_id" not in doc:
            raise InvalidField("unit_id", "required")
        unit_id = unit_id_of(doc["unit_id"], "unit_id")
        entity = doc.get("entity")
        if entity is not None:
            if not isinstance(entity, dict) or not entity:
                raise InvalidField("entity", "must be an object of join keys, e.g. {\"user_id\": 42}")
            if not shape.joins_features:
                raise InvalidField("entity", "online features are off on this gateway; send the full input")
        inputs = doc.get("inputs")
        if not isinstance(inputs, list):
            raise InvalidField("inputs", "required, a list of numbers")
        want = shape.request_width if entity is not None else shape.full_width
        if len(inputs) != want:
            raise InvalidField("inputs", f"expected {want} numbers "
                               f"({'with' if entity is not None else 'without'} an entity), got {len(inputs)}")
        for v in inputs:
            # JSON has no NaN/Infinity, so in float32 range means finite after conversion.
            if type(v) not in _NUMBER or not -_F32_MAX <= v <= _F32_MAX:
                raise InvalidField("inputs", "must contain only numbers within float32 range")
        row = np.array(inputs, dtype=np.float32).reshape(1, want)
        timings = doc.get("timings", False)
        if not isinstance(timings, bool):
            raise InvalidField("timings", "must be a boolean")
        return InferRequest(model, unit_id, entity, row, want_timings=timings)

    def render(self, req: InferRequest, res: InferResult) -> bytes:
        doc = {"model": req.model, "experiment": res.experiment, "variant": res.variant,
               "model_version": res.model_version,
               "outputs": {self.shapes[req.model].output_name: res.outputs[0]}}
        if res.features is not None:
            f = res.features
            doc["features"] = {"missing_entity": f.missing_entity, "null_count": f.null_count,
                               "defaulted": f.defaulted}
        if res.timings is not None:
            doc["timings_ms"] = res.timings
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
