"""The parsed, validated form of an inference request, shared by the v1 and v2 codecs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from gateway.errors import BadRequest, InvalidField, InvalidJSON


@dataclass(frozen=True)
class ModelShape:
    """Widths of a public model's input: the full vector Triton takes, and the request-side
    part a caller sends when the gateway joins the entity's online features."""

    full_width: int
    request_width: int
    output_name: str

    @property
    def joins_features(self) -> bool:
        return self.request_width < self.full_width


class InferRequest:
    """One request after parsing: what the pipeline needs and nothing else."""

    __slots__ = ("model", "unit_id", "entity", "rows", "override", "authenticated",
                 "want_timings", "request_id", "binary_output")

    def __init__(self, model: str, unit_id: str, entity: dict | None, rows: np.ndarray, *,
                 override: str | None = None, authenticated: bool = False,
                 want_timings: bool = False, request_id: str | None = None,
                 binary_output: bool = False) -> None:
        self.model, self.unit_id, self.entity, self.rows = model, unit_id, entity, rows
        self.override, self.authenticated = override, authenticated
        self.want_timings, self.request_id, self.binary_output = want_timings, request_id, binary_output

    def __repr__(self) -> str:
        return (f"<InferRequest model={self.model} unit={self.unit_id!r} "
                f"rows={self.rows.shape} entity={self.entity}>")


class InferResult:
    __slots__ = ("experiment", "variant", "model_version", "outputs", "features", "timings")

    def __init__(self, experiment: str, variant: str, model_version: str, outputs: np.ndarray,
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
