"""The repo's working dir: generated feature_store.yaml, parquet, registry and sqlite files.

Nothing here is committed: the default working dir ``features/repo/data/`` is git-ignored.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.repo.datagen import generate_frame, materialize_window, write_parquet
from features.urls import feast_to_redis_url, redis_url_to_feast

__all__ = ["Workspace", "DEFAULT_WORKDIR", "redis_url_to_feast", "feast_to_redis_url"]

from features.repo import DEFAULT_WORKDIR  # noqa: E402  (re-exported)
PARQUET = "user_features.parquet"


@dataclass(frozen=True, slots=True)
class Workspace:
    """One Feast repo working dir. ``online`` is "redis" (needs ``redis_url``) or "sqlite"."""

    path: Path
    project: str = "infergate"
    online: str = "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"

    def write_config(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.online == "redis":
            online = f"  type: redis\n  connection_string: \"{redis_url_to_feast(self.redis_url)}\"\n"
        elif self.online == "sqlite":
            online = f"  type: sqlite\n  path: {self.path / 'online.db'}\n"
        else:
            raise ValueError(f"online store must be redis or sqlite, not {self.online!r}")
        text = (
            f"project: {self.project}\n"
            "provider: local\n"
            f"registry: {self.path / 'registry.db'}\n"
            f"online_store:\n{online}"
            "offline_store:\n  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        cfg = self.path / "feature_store.yaml"
        cfg.write_text(text)
        return cfg

    def store(self):
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.path))

    def apply(self, frame: pd.DataFrame | None = None, *, rows: int = 10_000, seed: int = 7):
        """Write data (``frame`` or ``rows`` generated from ``seed``), the config, and apply; returns the store."""
        from features.repo.definitions import build_objects

        if frame is None:
            frame = generate_frame(rows, seed)
        parquet = write_parquet(frame, self.path / PARQUET)
        self.write_config()
        store = self.store()
        store.apply(build_objects(parquet))
        return store

    def materialize(self, store=None, window: tuple[datetime, datetime] | None = None,
                    *, slices: int = 8, progress: bool = True):
        """Load the parquet's latest rows into the online store, with a tqdm bar in rows.

        Feast 0.67's local engine draws no progress itself, so the window is materialised in
        ``slices`` ascending time slices (Feast's bounds are inclusive, and a newer row always
        wins, so the result equals one call over the whole window).
        """
        from tqdm import tqdm

        store = store or self.store()
        ts = pd.read_parquet(self.path / PARQUET, columns=["event_timestamp"])["event_timestamp"]
        lo, hi = window or materialize_window(pd.DataFrame({"event_timestamp": ts}))
        edges = pd.date_range(lo, hi, periods=max(slices, 1) + 1).to_pydatetime()
        with tqdm(total=int(((ts >= lo) & (ts <= hi)).sum()), unit="rows", desc="materialize",
                  disable=not progress) as bar:
            for start, end in zip(edges[:-1], edges[1:]):
                with contextlib.redirect_stdout(io.StringIO()):  # Feast's banner per slice
                    store.materialize(start_date=start, end_date=end)
                bar.update(int(((ts >= start) & (ts < end)).sum() + (end == edges[-1]) * (ts == end).sum()))
        return store
