"""What a reader needs to know about one feature view, as plain data (no Feast import).

``metadata.load_view_spec`` fills it from the Feast registry; the fast reader checks here,
once, that it can decode the layout exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.errors import UnsupportedLayout

__all__ = ["FeatureSpec", "JoinKey", "ViewSpec", "NUMERIC_DTYPES"]

# Feast dtype name -> the feast.types.Value field it is stored in (field number, wire type).
NUMERIC_DTYPES: dict[str, str] = {
    "Float32": "float_val",
    "Float64": "double_val",
    "Int32": "int32_val",
    "Int64": "int64_val",
    "Bool": "bool_val",
}
SUPPORTED_SERIALIZATION_VERSION = 3


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    dtype: str  # Feast type name, e.g. "Float32"


@dataclass(frozen=True, slots=True)
class JoinKey:
    name: str
    value_type: int  # feast.types.Value.ValueType number, e.g. 4 for INT64


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """A feature view and the store settings that decide how its online rows are laid out."""

    project: str
    view: str
    features: tuple[FeatureSpec, ...]
    join_keys: tuple[JoinKey, ...]
    serialization_version: int
    versioning: bool
    online_store: str                  # "redis", "sqlite", ...
    connection_string: str | None = None
    redis_type: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def all_float32(self) -> bool:
        return all(f.dtype == "Float32" for f in self.features)

    def check_fast_path(self) -> None:
        """Raise UnsupportedLayout saying what and why when the Redis fast reader cannot serve this."""
        where = f"feature view {self.view!r} of project {self.project!r}"
        if self.online_store != "redis":
            raise UnsupportedLayout(f"{where}: online store is {self.online_store!r}, not redis")
        if self.redis_type not in (None, "redis"):
            raise UnsupportedLayout(
                f"{where}: redis_type {self.redis_type!r} is not supported by the fast reader "
                "(single-node Redis only); use the Feast-API reader"
            )
        if self.serialization_version != SUPPORTED_SERIALIZATION_VERSION:
            raise UnsupportedLayout(
                f"{where}: entity_key_serialization_version is {self.serialization_version}; the "
                f"fast reader encodes keys as version {SUPPORTED_SERIALIZATION_VERSION} only, so its "
                "keys would not match the stored ones"
            )
        if self.versioning:
            raise UnsupportedLayout(
                f"{where}: enable_online_feature_view_versioning is on, so Feast names hash fields "
                "after '<view>_v<N>'; the fast reader does not resolve versions"
            )
        if not self.features:
            raise UnsupportedLayout(f"{where}: has no features")
        for f in self.features:
            if f.dtype not in NUMERIC_DTYPES:
                raise UnsupportedLayout(
                    f"{where}: feature {f.name!r} has type {f.dtype}; the reader returns a float32 "
                    f"vector and decodes only {', '.join(NUMERIC_DTYPES)}"
                )
