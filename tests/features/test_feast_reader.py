"""The Feast-API path on Feast's sqlite online store (no Redis at all), through the same interface."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from _features_fixture import BIG_ID, MISSING_ID, NAN_ID
from features import BadEntity, OnlineFeatureReader, open_reader
from features.feast_reader import FeastApiReader


@pytest.fixture(scope="module")
async def sqlite_reader(sqlite_repo):
    ws, _, _ = sqlite_repo
    r = await open_reader(ws.path, registry=CollectorRegistry())
    yield r
    await r.close()


async def test_sqlite_reader_matches_feast(sqlite_repo, sqlite_reader):
    _, store, frame = sqlite_repo
    r = sqlite_reader
    assert isinstance(r, FeastApiReader) and isinstance(r, OnlineFeatureReader)
    assert r.width == 16 and r.entity_keys == ("user_id",) and "thread" in repr(r)
    ids = frame.user_id.tolist()[:50] + [BIG_ID, NAN_ID, MISSING_ID]
    resp = store.get_online_features(features=[f"user_features:{n}" for n in r.names],
                                     entity_rows=[{"user_id": i} for i in ids]).to_dict()
    rows = await r.get_many([{"user_id": i} for i in ids])
    for k, (uid, row) in enumerate(zip(ids, rows)):
        feast_vals = [resp[n][k] for n in r.names]
        want = np.array([0.0 if v is None else v for v in feast_vals], dtype=np.float32)
        assert row.values.view(np.uint32).tolist() == want.view(np.uint32).tolist(), uid
        assert row.null_count == sum(v is None for v in feast_vals)
        assert row.missing_entity == (uid == MISSING_ID)


async def test_sqlite_coalesces_and_validates(sqlite_reader):
    r = sqlite_reader
    before = r.reads
    rows = await asyncio.gather(*(r.get({"user_id": i}) for i in range(1, 11)))
    assert r.reads == before + 1 and all(not x.missing_entity for x in rows)
    with pytest.raises(BadEntity, match="user_id"):
        await r.get({"user_id": "7"})


async def test_feast_api_reader_on_redis_uses_async_and_agrees_with_fast_reader(redis_repo):
    from features.metadata import load_view_spec
    from features.metrics import ReaderMetrics
    from features.policy import FailurePolicy

    ws, store, _ = redis_repo
    policy = FailurePolicy()
    spec = load_view_spec(store)
    api = FeastApiReader(spec, store, policy, ReaderMetrics(CollectorRegistry(), "feast-redis", spec.view))
    fast = await open_reader(ws.path, registry=CollectorRegistry())
    try:
        assert "async" in repr(api)
        ids = [{"user_id": i} for i in (1, 2, NAN_ID, BIG_ID, MISSING_ID)]
        a, b = await api.get_many(ids), await fast.get_many(ids)
        assert [r.values.tobytes() for r in a] == [r.values.tobytes() for r in b]
        assert [(r.null_count, r.missing_entity) for r in a] == [(r.null_count, r.missing_entity) for r in b]
    finally:
        await fast.close()
        await api.close()


@pytest.mark.parametrize("edit,what", [
    (lambda t: t.replace("entity_key_serialization_version: 3", "entity_key_serialization_version: 2"),
     "entity_key_serialization_version is 2"),
    (lambda t: t.replace("registry: ", "registry:\n  enable_online_feature_view_versioning: true\n  path: "),
     "enable_online_feature_view_versioning is on"),
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_open_reader_refuses_unsupported_redis_layouts(redis_repo, tmp_path, edit, what):
    from features import UnsupportedLayout

    ws, _, _ = redis_repo
    (tmp_path / "feature_store.yaml").write_text(edit((ws.path / "feature_store.yaml").read_text()))
    with pytest.raises(UnsupportedLayout, match=what):
        await open_reader(tmp_path, registry=CollectorRegistry())
    fallback = await open_reader(tmp_path, registry=CollectorRegistry(), allow_fallback=True)
    assert isinstance(fallback, FeastApiReader)
    await fallback.close()
