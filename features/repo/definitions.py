"""Feast objects of the demo repo: entity ``user`` (join key ``user_id``, INT64) and ``user_features``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

from features.repo.datagen import FEATURE_NAMES

__all__ = ["VIEW_NAME", "build_objects"]

VIEW_NAME = "user_features"


def build_objects(parquet: Path, feature_names: tuple[str, ...] = FEATURE_NAMES) -> list:
    """Entity and feature view over ``parquet``; pass them to ``FeatureStore.apply``."""
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
                  description="A registered user of the demo shop")
    source = FileSource(name="user_features_source", path=str(parquet),
                        timestamp_field="event_timestamp", created_timestamp_column="created")
    view = FeatureView(
        name=VIEW_NAME,
        entities=[user],
        ttl=timedelta(days=30),
        schema=[Field(name="user_id", dtype=Int64)] + [Field(name=n, dtype=Float32) for n in feature_names],
        online=True,
        source=source,
    )
    return [user, view]
