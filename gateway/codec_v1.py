"""`POST /v1/infer`: the gateway's own JSON protocol.

Request:  {"model": "clf", "unit_id": "u-1", "entity": {"user_id": 42},
           "inputs": [4 floats with an entity | the full input vector without],
           "timings": false}
          or, for any model, named inputs, one instance each (no batch dimension; a model
          with `max_batch_size: 0` takes its tensors whole):
           "inputs": {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1]}
          (BYTES inputs as strings; numbers as the input's datatype allows)
Response: {"model", "experiment", "variant", "model_version", "outputs": {NAME: value, ...},
           "features": {...} (with an entity), "timings_ms": {...} (when asked)}
"""

from __future__ import annotations

import numpy as np
import orjson

from gateway.errors import InvalidField, UnknownModel
from gateway.request import InferRequest, InferResult, PublicModel, load_object, unit_id_of
from gateway.tensors import FLOATS, check_shape, from_json, to_nested_json

_NUMBER = (int, float)
_F32_MAX = float(np.finfo(np.float32).max)
# A render's constant parts: the features' flags when nothing was defaulted, and a bound on
# the cached heads (one per model, experiment, variant and version served).
_CLEAN_FEATURES = b',"features":{"missing_entity":false,"null_count":0,"defaulted":false}'
_MAX_HEADS = 1024


class V1Codec:
    """Parses and renders v1 bodies; `models` (public model -> contract) is filled at start-up
    and whenever the router starts serving a new model."""

    __slots__ = ("models", "_heads")

    def __init__(self, models: dict[str, PublicModel]) -> None:
        self.models = models
        self._heads: dict[tuple, bytes] = {}

    def parse(self, body: bytes) -> InferRequest:
        doc = load_object(body, "body")
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidField("model", "required, a non-empty string")
        pm = self.models.get(model)
        if pm is None:
            raise UnknownModel(f"model {model!r} is not served here")
        if "unit_id" not in doc:
            raise InvalidField("unit_id", "required")
        unit_id = unit_id_of(doc["unit_id"], "unit_id")
        entity = doc.get("entity")
        if entity is not None:
            if not isinstance(entity, dict) or not entity:
                raise InvalidField("entity", "must be an object of join keys, e.g. {\"user_id\": 42}")
            if not pm.joins_features:
                raise InvalidField("entity", "online features are off for this model on this gateway; "
                                   "send the full input")
        inputs = doc.get("inputs")
        if isinstance(inputs, list):
            arrays = self._vector(pm, inputs, entity is not None)
        elif isinstance(inputs, dict):
            arrays = self._named(pm, inputs, entity is not None)
        else:
            raise InvalidField("inputs", "required: a list of numbers (one-input models) or an object of "
                               "named inputs")
        timings = doc.get("timings", False)
        if not isinstance(timings, bool):
            raise InvalidField("timings", "must be a boolean")
        return InferRequest(model, unit_id, entity, arrays, want_timings=timings)

    @staticmethod
    def _vector(pm: PublicModel, inputs: list, with_entity: bool) -> dict[str, np.ndarray]:
        """Today's form: one row of the model's single 1-D input."""
        v = pm.vector
        if v is None or (with_entity and v[3] is None):
            names = [t.name for t in pm.spec.inputs if pm.request_dims(t, with_entity) is not None]
            raise InvalidField("inputs", f"this model takes named inputs: {names}")
        name, datatype, plain, joined = v
        want = joined if with_entity else plain
        if want >= 0 and len(inputs) != want:  # type: ignore[operator]
            raise InvalidField("inputs", f"expected {want} numbers "
                               f"({'with' if with_entity else 'without'} an entity), got {len(inputs)}")
        if datatype == "FP32":  # the demo's fast path
            for x in inputs:
                # JSON has no NaN/Infinity, so in float32 range means finite after conversion.
                if type(x) not in _NUMBER or not -_F32_MAX <= x <= _F32_MAX:
                    raise InvalidField("inputs", "must contain only numbers within float32 range")
            return {name: np.array(inputs, dtype=np.float32).reshape(1, len(inputs))}
        arr = from_json(f"inputs {name!r}", datatype, inputs, (1, len(inputs)))
        if datatype in FLOATS and not np.isfinite(arr).all():
            raise InvalidField("inputs", "values must be finite")
        return {name: arr}

    @staticmethod
    def _named(pm: PublicModel, inputs: dict, with_entity: bool) -> dict[str, np.ndarray]:
        spec = pm.spec
        out: dict[str, np.ndarray] = {}
        for t in spec.inputs:
            dims = pm.request_dims(t, with_entity)
            if dims is None:
                if t.name in inputs:
                    raise InvalidField(f"inputs.{t.name}", "is joined from the online features; do not send it "
                                       "with an entity")
                continue
            if t.name not in inputs:
                raise InvalidField(f"inputs.{t.name}", f"missing; the model takes {[x.name for x in spec.inputs]}")
            value = inputs[t.name]
            where = f"inputs.{t.name}"
            try:
                shape = np.shape(value) if isinstance(value, list) else ()
            except (ValueError, TypeError):
                raise InvalidField(where, "must be a (nested) list of the same length at each level") from None
            if spec.batchable:
                shape = (1, *shape)
            shape = check_shape(where, list(shape), dims, spec.batchable, 1)
            data = value if isinstance(value, list) else [value]
            arr = from_json(where, t.datatype, data, shape)
            if t.datatype in FLOATS and not np.isfinite(arr).all():
                raise InvalidField(f"{where}", "values must be finite")
            out[t.name] = arr
        extra = sorted(set(inputs) - {t.name for t in spec.inputs})
        if extra:
            raise InvalidField(f"inputs.{extra[0]}", f"unknown input; the model takes {[x.name for x in spec.inputs]}")
        return out

    def render(self, req: InferRequest, res: InferResult) -> bytes:
        """The answer's bytes: exactly `orjson.dumps` of the documented object, assembled from a
        head cached per (model, experiment, variant, version), the outputs, and the features'
        flags (pre-encoded when clean): only the outputs are serialised per request."""
        pm = self.models[req.model]
        if pm.numeric_batch_outputs:  # numeric arrays serialise as they are (OPT_SERIALIZE_NUMPY)
            outputs = {name: arr[0] for name, arr in res.outputs.items()}
        elif pm.spec.batchable:
            outputs = {name: to_nested_json(arr[0]) for name, arr in res.outputs.items()}
        else:
            outputs = {name: to_nested_json(arr) for name, arr in res.outputs.items()}
        key = (req.model, res.experiment, res.variant, res.model_version)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _MAX_HEADS:  # variants and versions come and go with reloads
                self._heads.clear()
            head = self._heads[key] = orjson.dumps(
                {"model": key[0], "experiment": key[1], "variant": key[2], "model_version": key[3]}
            )[:-1] + b',"outputs":'
        parts = [head, orjson.dumps(outputs, option=orjson.OPT_SERIALIZE_NUMPY)]
        f = res.features
        if f is not None:
            nulls = f.null_count
            if f.missing_entity is False and f.defaulted is False and type(nulls) is int and nulls == 0:
                parts.append(_CLEAN_FEATURES)
            else:
                parts.append(b',"features":' + orjson.dumps(
                    {"missing_entity": f.missing_entity, "null_count": nulls, "defaulted": f.defaulted},
                    option=orjson.OPT_SERIALIZE_NUMPY))
        if res.timings is not None:
            parts.append(b',"timings_ms":' + orjson.dumps(res.timings, option=orjson.OPT_SERIALIZE_NUMPY))
        parts.append(b"}")
        return b"".join(parts)
