"""The parsed, validated form of an inference request, shared by every front, and the public
model each codec checks requests against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson

from gateway.backend import ModelSpec
from gateway.errors import BadRequest, InvalidField, InvalidJSON
from gateway.tensors import TensorSpec


@dataclass(frozen=True)
class FeatureJoin:
    """Where a public model's online features go, decided at start-up from the gateway's
    config: `concat` writes them in front of the request's columns along the last dimension
    of a 2-D FP32/FP16 input; `own` makes them the whole input (the caller omits it)."""

    input: str
    mode: str          # "concat" | "own"
    width: int
    dtype: np.dtype

    def apply(self, inputs: dict[str, np.ndarray], values: np.ndarray) -> dict[str, np.ndarray]:
        """A new dict (the caller's is not mutated) with the features joined to every row."""
        out = dict(inputs)
        fw = self.width
        if self.mode == "own":
            n = next(iter(inputs.values())).shape[0] if inputs else 1
            x = np.empty((n, fw), dtype=self.dtype)
            x[:] = values
        else:
            rows = inputs[self.input]
            x = np.empty((rows.shape[0], fw + rows.shape[1]), dtype=self.dtype)
            x[:, :fw] = values
            x[:, fw:] = rows
        out[self.input] = x
        return out


@dataclass(frozen=True)
class PublicModel:
    """A model as callers see it (one experiment's public name): the Triton contract its
    targets share, the feature join, the entity keys and the most rows one request may send."""

    name: str
    spec: ModelSpec
    join: FeatureJoin | None
    entity_keys: tuple[str, ...]
    max_rows: int
    # The v1 single-vector form, decided here once: (input, datatype, width without an
    # entity, width with one), or None when the model takes named inputs only.
    vector: tuple[str, str, int, int | None] | None = field(init=False, compare=False)
    # True when the model is batchable and no output is BYTES: the v1 answer is each output's
    # row as it is (`to_nested_json` would return it unchanged).
    numeric_batch_outputs: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        spec, vector = self.spec, None
        if spec.batchable and len(spec.inputs) == 1 and len(spec.inputs[0].dims) == 1:
            t = spec.inputs[0]
            with_entity = self.request_dims(t, True)
            vector = (t.name, t.datatype, t.dims[0], with_entity[0] if with_entity else None)
        object.__setattr__(self, "vector", vector)
        object.__setattr__(self, "numeric_batch_outputs",
                           spec.batchable and all(t.datatype != "BYTES" for t in spec.outputs))

    @property
    def joins_features(self) -> bool:
        return self.join is not None

    def request_dims(self, t: TensorSpec, with_entity: bool) -> tuple[int, ...] | None:
        """The dims a caller sends for input `t` (None: not sent, the features are that input)."""
        j = self.join
        if not with_entity or j is None or j.input != t.name:
            return t.dims
        if j.mode == "own":
            return None
        return (*t.dims[:-1], t.dims[-1] - j.width)


class InferRequest:
    """One request after parsing: what the pipeline needs and nothing else.

    Protocol-free, so any front (v1, v2 HTTP, gRPC) builds one without a codec:

    - `inputs`: named numpy arrays in the model's datatypes (BYTES: object arrays of `bytes`),
      already checked against the model's contract (`V2Codec.request` checks arrays a front
      decoded itself). A batchable model's arrays carry the batch dimension first, the same
      row count in each; a model with `max_batch_size: 0` gets them as they are.
      With `entity` set, the input the features join into is shorter (concat) or absent (own).
    - `outputs`: the output names to answer with, in order (None: all, in the model's order).
    - `binary`: the output names a v2 HTTP answer carries in binary (Triton's per-output
      `binary_data`); other fronts ignore it.
    - `rows`: the single input of a one-input model (today's demo shape), for old callers.
    """

    __slots__ = ("model", "unit_id", "entity", "inputs", "outputs", "binary", "override", "authenticated",
                 "want_timings", "request_id")

    def __init__(self, model: str, unit_id: str, entity: dict | None, inputs: dict[str, np.ndarray], *,
                 outputs: tuple[str, ...] | None = None, binary: frozenset[str] = frozenset(),
                 override: str | None = None, authenticated: bool = False,
                 want_timings: bool = False, request_id: str | None = None) -> None:
        self.model, self.unit_id, self.entity, self.inputs = model, unit_id, entity, inputs
        self.outputs, self.binary = outputs, binary
        self.override, self.authenticated = override, authenticated
        self.want_timings, self.request_id = want_timings, request_id

    @property
    def rows(self) -> np.ndarray:
        return next(iter(self.inputs.values()))

    def __repr__(self) -> str:
        shapes = {k: v.shape for k, v in self.inputs.items()}
        return f"<InferRequest model={self.model} unit={self.unit_id!r} inputs={shapes} entity={self.entity}>"


class InferResult:
    """The answer: every output of the model for this request's rows, by name (renderers
    pick `InferRequest.outputs`), and where it came from."""

    __slots__ = ("experiment", "variant", "model_version", "outputs", "features", "timings")

    def __init__(self, experiment: str, variant: str, model_version: str, outputs: dict[str, np.ndarray],
                 features: object | None, timings: dict[str, float] | None) -> None:
        self.experiment, self.variant, self.model_version = experiment, variant, model_version
        self.outputs, self.features, self.timings = outputs, features, timings


def unit_id_of(value: object, field: str) -> str:
    """Unit ids are strings; integers are accepted and stringified (never bools or floats)."""
    if isinstance(value, str):
        if not value or len(value) > 256:
            raise InvalidField(field, "must be 1 to 256 characters")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidField(field, "must be a string or an integer")


def load_object(raw: bytes, what: str) -> dict:
    """Parse a JSON object (`what` names it in the error: "body", "inference header")."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc
