"""The model contract and the feature join, decided at start-up (pure: no server).

Where the online features go is declared per model; a declaration the model cannot take is
refused with the reason when the spec is read, never per request."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gateway.backend import ModelSpec
from gateway.components import Components
from gateway.config import GatewayConfig, parse_joins
from gateway.errors import ModelUnavailable
from gateway.request import FeatureJoin, PublicModel
from gateway.tensors import TensorSpec

FEATURES = SimpleNamespace(width=16, entity_keys=("user_id",))


def _spec(name: str, *inputs: tuple[str, str, tuple[int, ...]], batch: int = 8) -> ModelSpec:
    return ModelSpec(name, ("1",), tuple(TensorSpec(*t) for t in inputs), (TensorSpec("OUT", "FP32", (1,)),), batch)


def _join(spec: ModelSpec, joins: str = "", features: object = FEATURES) -> FeatureJoin | None:
    cfg = GatewayConfig(feature_joins=parse_joins(joins))
    return Components(cfg, features=features)._join_for(spec)


def test_the_demo_shape_takes_features_by_concat_undeclared() -> None:
    j = _join(_spec("clf", ("INPUT", "FP32", (20,))))
    assert j == FeatureJoin("INPUT", "concat", 16, np.dtype(np.float32))
    assert _join(_spec("clf", ("INPUT", "FP32", (20,))), features=None) is None   # features off
    assert _join(_spec("clf", ("INPUT", "FP32", (20,))), "clf=none") is None


def test_declared_joins_own_and_fp16() -> None:
    spec = _spec("ranker", ("IDS", "INT64", (-1,)), ("FEATS", "FP16", (16,)))
    assert _join(spec) is None   # several inputs: nothing joined unless declared
    assert _join(spec, "ranker=FEATS:own") == FeatureJoin("FEATS", "own", 16, np.dtype(np.float16))


@pytest.mark.parametrize(("inputs", "joins", "reason"), [
    ((("IDS", "INT64", (20,)),), "m=IDS:concat", "input IDS is INT64; features join into FP32 or FP16 inputs only"),
    ((("X", "FP32", (20,)),), "m=Y:concat", "it has no input 'Y'"),
    ((("X", "FP32", (3, 20)),), "m=X:concat", "input X must be [-1, width] of a batchable model, not [-1, 3, 20]"),
    ((("X", "FP32", (20,)),), "m=X:own", "input X is 20 wide; the features are 16"),
    ((("X", "FP32", (16,)),), "m=X:concat", "concat needs more than the 16 feature columns"),
])
def test_a_join_the_model_cannot_take_is_refused_with_the_reason(inputs: tuple, joins: str, reason: str) -> None:
    with pytest.raises(ModelUnavailable) as exc:
        _join(_spec("m", *inputs), joins)
    assert reason in exc.value.message and "model 'm'" in exc.value.message


def test_a_bad_declaration_is_refused_even_with_features_off() -> None:
    with pytest.raises(ModelUnavailable, match="INT64"):
        _join(_spec("m", ("IDS", "INT64", (20,))), "m=IDS:concat", features=None)


def test_join_declarations_parse_or_fail_at_start_up() -> None:
    assert parse_joins("a=X:concat, b=F:own,c=none") == {"a": "X:concat", "b": "F:own", "c": "none"}
    for bad in ("a", "a=X", "a=X:pad", "=X:own"):
        with pytest.raises(ValueError):
            parse_joins(bad)


def test_join_apply_concat_and_own_do_not_mutate_the_request() -> None:
    values = np.arange(16, dtype=np.float32)
    rows = {"INPUT": np.ones((2, 4), np.float32)}
    out = FeatureJoin("INPUT", "concat", 16, np.dtype(np.float32)).apply(rows, values)
    assert out["INPUT"].shape == (2, 20) and rows["INPUT"].shape == (2, 4)
    np.testing.assert_array_equal(out["INPUT"][:, :16], np.broadcast_to(values, (2, 16)))
    ids = {"IDS": np.zeros((3, 5), np.int64)}
    own = FeatureJoin("FEATS", "own", 16, np.dtype(np.float16)).apply(ids, values)
    assert set(own) == {"IDS", "FEATS"} and own["FEATS"].dtype == np.float16 and own["FEATS"].shape == (3, 16)
    assert set(ids) == {"IDS"}


def test_public_model_request_dims_and_the_v1_vector_form() -> None:
    spec = _spec("clf", ("INPUT", "FP32", (20,)))
    pm = PublicModel("clf", spec, FeatureJoin("INPUT", "concat", 16, np.dtype(np.float32)), ("user_id",), 8)
    assert pm.request_dims(spec.inputs[0], True) == (4,) and pm.request_dims(spec.inputs[0], False) == (20,)
    assert pm.vector == ("INPUT", "FP32", 20, 4)
    multi = _spec("r", ("IDS", "INT64", (-1,)), ("FEATS", "FP32", (16,)))
    pm2 = PublicModel("r", multi, FeatureJoin("FEATS", "own", 16, np.dtype(np.float32)), ("user_id",), 8)
    assert pm2.request_dims(multi.inputs[1], True) is None and pm2.vector is None
    assert not _spec("nb", ("X", "INT32", (2, 3)), batch=0).simple


def test_another_front_builds_a_checked_request_from_arrays() -> None:
    """`V2Codec.request`: what a gRPC front that decoded its own tensors calls (no JSON)."""
    from gateway.codec_v2 import V2Codec
    from gateway.errors import InvalidField
    spec = _spec("t", ("IDS", "INT64", (-1,)), ("MASK", "INT64", (-1,)))
    codec = V2Codec(PublicModel("t", spec, None, (), 8))
    ids, mask = np.ones((2, 5), np.int64), np.zeros((2, 5), np.int64)
    req = codec.request("t", "u", {"MASK": mask, "IDS": ids}, outputs=("OUT",))
    assert list(req.inputs) == ["IDS", "MASK"] and req.outputs == ("OUT",) and req.binary == frozenset()
    for arrays, problem in [({"IDS": ids}, "missing input(s) ['MASK']"),
                            ({"IDS": ids, "MASK": mask.astype(np.int32)}, "expected INT64"),
                            ({"IDS": ids, "MASK": mask[:1]}, "batch size"),
                            ({"IDS": ids, "MASK": mask, "X": ids}, "unknown input")]:
        with pytest.raises(InvalidField) as exc:
            codec.request("t", "u", arrays)
        assert problem in exc.value.message
    with pytest.raises(InvalidField, match="unknown output"):
        codec.request("t", "u", {"IDS": ids, "MASK": mask}, outputs=("NOPE",))
