"""The repo working dir: URL conversions, deterministic data, sliced materialisation keeps the newest row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from features import open_reader
from features.repo.datagen import FEATURE_NAMES, generate_frame
from features.repo.workspace import Workspace
from features.urls import feast_to_redis_url, redis_url_to_feast


@pytest.mark.parametrize("url,conn", [
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
    ("rediss://:pw@cache:6380/2", "cache:6380,db=2,password=pw,ssl=true"),
])
def test_url_round_trip(url, conn):
    assert redis_url_to_feast(url) == conn
    assert feast_to_redis_url(conn) == url


def test_generated_data_is_deterministic_and_realistic():
    a, b = generate_frame(2000, seed=5), generate_frame(2000, seed=5)
    cols = list(FEATURE_NAMES)
    assert a[cols].equals(b[cols]) and len(cols) == 16
    assert all(a[c].dtype == np.float32 for c in cols)
    assert a[cols].isna().to_numpy().any()  # some missing values
    assert a["sessions_7d"].corr(a["clicks_7d"]) > 0.3  # correlated through latent factors
    assert (a["spend_30d"] == 0).mean() > 0.1  # zero-inflated


async def test_sliced_materialize_keeps_the_newest_row(own_redis, tmp_path):
    old = generate_frame(20, seed=1)
    new = generate_frame(20, seed=2)
    new["event_timestamp"] = old["event_timestamp"] + timedelta(hours=1)
    new["created"] = new["event_timestamp"]
    ws = Workspace(tmp_path, project=f"t_{uuid.uuid4().hex[:10]}", online="redis", redis_url=own_redis.url)
    store = ws.apply(pd.concat([new, old], ignore_index=True))
    ws.materialize(store, slices=5, progress=False)
    reader = await open_reader(tmp_path, registry=CollectorRegistry())
    try:
        rows = await reader.get_many([{"user_id": int(i)} for i in new.user_id])
        got = np.stack([r.values for r in rows])
        want = new[list(reader.names)].fillna(0.0).to_numpy(np.float32)
        assert np.array_equal(got, want)
    finally:
        await reader.close()
