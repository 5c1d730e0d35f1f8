"""Reading a feature view's metadata from the Feast registry into a plain ViewSpec (start-up only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.errors import UnsupportedLayout
from features.spec import FeatureSpec, JoinKey, ViewSpec

__all__ = ["open_store", "load_view_spec"]


def open_store(repo_path: str | Path) -> Any:
    """A ``feast.FeatureStore`` for the repo at ``repo_path`` (blocking: imports Feast, reads the registry)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


def load_view_spec(store: Any, view: str | None = None) -> ViewSpec:
    """The ViewSpec of ``view`` (default: the repo's only feature view) from ``store``'s registry."""
    views = store.list_feature_views()
    if view is None:
        if len(views) != 1:
            names = sorted(v.name for v in views)
            raise UnsupportedLayout(f"repo has feature views {names}; name the one to serve")
        fv = views[0]
    else:
        fv = store.get_feature_view(view)
    cfg = store.config
    online = cfg.online_store
    redis_type = getattr(online, "redis_type", None)
    join_keys = tuple(
        JoinKey(c.name, int(c.dtype.to_value_type().value)) for c in fv.entity_columns
    )
    if not join_keys:
        raise UnsupportedLayout(f"feature view {fv.name!r} has no join keys")
    return ViewSpec(
        project=cfg.project,
        view=fv.name,
        features=tuple(FeatureSpec(f.name, str(f.dtype)) for f in fv.features),
        join_keys=join_keys,
        serialization_version=int(cfg.entity_key_serialization_version),
        versioning=bool(getattr(cfg.registry, "enable_online_feature_view_versioning", False)),
        online_store=str(online.type),
        connection_string=getattr(online, "connection_string", None),
        redis_type=None if redis_type is None else str(getattr(redis_type, "value", redis_type)),
    )
