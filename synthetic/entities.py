"""Synthetic entities for load tests: a Feast project filled with sampled users, no real ones.

``python -m synthetic entities --workdir DIR --rows N`` samples N rows, gives them user ids and
event times like features/repo/datagen.py, applies them as a separate Feast project (by default
``infergate_synthetic``) and materialises it into Redis, so bench/ can run the full path
(``bench/harness.py --entities synthetic``) without a real user in the store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from synthetic.codec import TableError
from synthetic.sampler import Sampler

__all__ = ["entity_frame", "populate", "PROJECT"]

PROJECT = "infergate_synthetic"


def entity_frame(sampler: Sampler, rows: int, seed: int, *, first_id: int = 1, anchor: datetime | None = None):
    """``rows`` sampled users with ids ``first_id..`` and event times in the 7 days before ``anchor``."""
    import pandas as pd

    from features.repo.datagen import FEATURE_NAMES

    missing = [n for n in FEATURE_NAMES if n not in sampler.columns]
    if missing:
        raise TableError(f"{missing[0]}: the feature view needs it; this generator has no such column")
    data = sampler.sample(rows, seed)
    frame = pd.DataFrame({n: data[:, sampler.columns.index(n)] for n in FEATURE_NAMES})
    anchor = anchor or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ages = np.random.default_rng([seed, 1]).uniform(0, 7 * 86400, rows)
    ts = pd.Timestamp(anchor) - pd.to_timedelta(np.round(ages), unit="s")
    frame.insert(0, "user_id", np.arange(first_id, first_id + rows, dtype=np.int64))
    frame["event_timestamp"] = ts
    frame["created"] = ts
    return frame


def populate(sampler: Sampler, workdir: Path, *, rows: int, seed: int, project: str = PROJECT,
             redis_url: str = "redis://127.0.0.1:6379/0", progress: bool = True):
    """Apply and materialise a Feast project of synthetic users; returns the store."""
    from features.repo.workspace import Workspace

    ws = Workspace(Path(workdir), project=project, online="redis", redis_url=redis_url)
    store = ws.apply(entity_frame(sampler, rows, seed))
    ws.materialize(store, progress=progress)
    return store
