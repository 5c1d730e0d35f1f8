"""`V1Codec.render` assembles its answer from cached parts: byte for byte what one `orjson.dumps`
of the documented object gives (the reference below is the renderer it replaced)."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pytest

from features.row import FeatureRow
from gateway.backend import ModelSpec
from gateway.codec_v1 import V1Codec
from gateway.request import FeatureJoin, InferRequest, InferResult, PublicModel
from gateway.tensors import TensorSpec, to_nested_json


def _reference(pm: PublicModel, req: InferRequest, res: InferResult) -> bytes:
    if pm.spec.batchable:
        outputs = {name: to_nested_json(arr[0]) for name, arr in res.outputs.items()}
    else:
        outputs = {name: to_nested_json(arr) for name, arr in res.outputs.items()}
    doc = {"model": req.model, "experiment": res.experiment, "variant": res.variant,
           "model_version": res.model_version, "outputs": outputs}
    if res.features is not None:
        f = res.features
        doc["features"] = {"missing_entity": f.missing_entity, "null_count": f.null_count,
                           "defaulted": f.defaulted}
    if res.timings is not None:
        doc["timings_ms"] = res.timings
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _models() -> dict[str, tuple[PublicModel, dict[str, np.ndarray]]]:
    clf = ModelSpec("clf", ("1",), (TensorSpec("INPUT", "FP32", (20,)),),
                    (TensorSpec("PROBS", "FP32", (2,)),), 64)
    multi = ModelSpec("multi", ("1",), (TensorSpec("X", "INT64", (3,)),),
                      (TensorSpec("LABEL", "BYTES", (1,)), TensorSpec("SCORE", "FP16", (1,))), 8)
    whole = ModelSpec("whole", ("1",), (TensorSpec("X", "FP32", (2, 2)),),
                      (TensorSpec("Y", "FP64", (2, 2)),), 0)
    join = FeatureJoin("INPUT", "concat", 16, np.dtype(np.float32))
    return {
        "clf": (PublicModel("clf", clf, join, ("user_id",), 64),
                {"PROBS": np.array([[0.1, 0.9]], dtype=np.float32)}),
        "multi": (PublicModel("multi", multi, None, (), 8),
                  {"LABEL": np.array([[b"caf\xc3\xa9"]], dtype=object), "SCORE": np.array([[0.5]], dtype=np.float16)}),
        "whole": (PublicModel("whole", whole, None, (), 1),
                  {"Y": np.array([[1.0, 2.5], [-3.0, 1e300]])}),
    }


FEATURES = [None, FeatureRow(np.zeros(16, np.float32)), FeatureRow(np.zeros(16, np.float32), True, 16, False),
            FeatureRow(np.zeros(16, np.float32), False, 0, True), FeatureRow(np.zeros(16, np.float32), False, 3),
            FeatureRow(np.zeros(16, np.float32), np.bool_(False), np.int64(0), np.bool_(False))]
TIMINGS = [None, {"features": 0.1, "queue": 0.25, "inference": 1.5, "total": 2.0, "batch_rows": 7}]


@pytest.mark.parametrize("model", ["clf", "multi", "whole"])
def test_render_is_byte_identical_to_one_dumps(model: str) -> None:
    models = _models()
    codec = V1Codec({k: v[0] for k, v in models.items()})
    pm, outputs = models[model]
    req = InferRequest(model, "u-1", None, {})
    for (exp, var, ver), feats, timings in itertools.product(
            [("e1", "a", "1"), ("e1", "b", "2"), (None, "default", "1"), ('q"uo\\te', "ü", "3")], FEATURES, TIMINGS):
        res = InferResult(exp, var, ver, outputs, feats, timings)
        for _ in range(2):  # the first render fills the head cache, the second uses it
            assert codec.render(req, res) == _reference(pm, req, res)
