"""The fast Redis reader against real Redis and real Feast: contract, coalescing, metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from _features_fixture import BIG_ID, MISSING_ID, NAN_ID, ZERO_ID
from features import BadEntity, FailurePolicy, OnlineFeatureReader, open_reader
from features.redis_reader import RedisFeatureReader


@pytest.fixture(scope="module")
async def reader_and_registry(redis_repo):
    ws, _, _ = redis_repo
    registry = CollectorRegistry()
    r = await open_reader(ws.path, registry=registry, policy=FailurePolicy(default_value=-1.0))
    yield r, registry
    await r.close()


def _feast_rows(store, names, ids):
    resp = store.get_online_features(
        features=[f"user_features:{n}" for n in names], entity_rows=[{"user_id": i} for i in ids]
    ).to_dict()
    return [[resp[n][k] for n in names] for k in range(len(ids))]  # by name: Feast's order varies


async def test_contract_bit_exact_against_feast(redis_repo, reader_and_registry):
    _, store, frame = redis_repo
    reader, _ = reader_and_registry
    assert isinstance(reader, RedisFeatureReader) and isinstance(reader, OnlineFeatureReader)
    ids = frame.user_id.tolist() + [MISSING_ID]
    assert BIG_ID in ids and NAN_ID in ids and ZERO_ID in ids
    expected = _feast_rows(store, reader.names, ids)
    rows = await reader.get_many([{"user_id": i} for i in ids])
    assert len(rows) == len(ids)
    for uid, row, feast_row in zip(ids, rows, expected):
        nulls = [v is None for v in feast_row]
        want = np.array([-1.0 if v is None else v for v in feast_row], dtype=np.float32)
        assert row.values.dtype == np.float32 and row.values.shape == (16,)
        assert row.values.view(np.uint32).tolist() == want.view(np.uint32).tolist(), uid
        assert row.null_count == sum(nulls), uid
        assert row.missing_entity == (uid == MISSING_ID)
        assert not row.defaulted
    by_id = dict(zip(ids, rows))
    assert by_id[NAN_ID].null_count == 2
    loyalty = reader.names.index("loyalty_score")
    assert by_id[ZERO_ID].values.view(np.uint32)[loyalty] == 0x80000000  # -0.0 kept


async def test_unix_socket_reads_the_same_rows(own_redis, redis_repo, reader_and_registry):
    """`redis_url` unix://... (a Redis on this machine): the same rows as over TCP."""
    ws, _, frame = redis_repo
    tcp, _ = reader_and_registry
    r = await open_reader(ws.path, redis_url=own_redis.unix_url, registry=CollectorRegistry(),
                          policy=FailurePolicy(default_value=-1.0))
    try:
        assert isinstance(r, RedisFeatureReader) and "unix:" in repr(r)
        entities = [{"user_id": i} for i in frame.user_id.tolist() + [MISSING_ID]]
        got, want = await r.get_many(entities), await tcp.get_many(entities)
        assert [row.values.tobytes() for row in got] == [row.values.tobytes() for row in want]
        assert [row.missing_entity for row in got] == [row.missing_entity for row in want]
        assert any(row.missing_entity for row in got)
    finally:
        await r.close()


async def test_single_gets_match_get_many(reader_and_registry):
    reader, _ = reader_and_registry
    many = await reader.get_many([{"user_id": BIG_ID}, {"user_id": 5}])
    one = await reader.get({"user_id": BIG_ID})
    assert one.values.tobytes() == many[0].values.tobytes()


async def test_concurrent_gets_cost_one_round_trip(reader_and_registry):
    reader, _ = reader_and_registry
    before = reader.reads
    rows = await asyncio.gather(*(reader.get({"user_id": i}) for i in range(1, 41)))
    assert reader.reads == before + 1
    again = await reader.get_many([{"user_id": i} for i in range(1, 41)])
    assert [r.values.tobytes() for r in rows] == [r.values.tobytes() for r in again]


async def test_max_batch_splits_round_trips(redis_repo):
    ws, _, _ = redis_repo
    r = await open_reader(ws.path, registry=CollectorRegistry(), policy=FailurePolicy(max_batch=8))
    try:
        await asyncio.gather(*(r.get({"user_id": i}) for i in range(20)))
        assert r.reads == 3
    finally:
        await r.close()


async def test_bad_entity_fails_only_its_caller(reader_and_registry):
    reader, _ = reader_and_registry
    good = asyncio.ensure_future(reader.get({"user_id": 3}))
    with pytest.raises(BadEntity) as info:
        await reader.get({"user": 3})
    assert info.value.field == "user_id"
    with pytest.raises(BadEntity):
        await reader.get_many([{"user_id": 1}, {"user_id": "1"}])
    assert not (await good).missing_entity


async def test_metrics_count_missing_nulls_and_freshness(reader_and_registry):
    reader, registry = reader_and_registry
    labels = {"store": "redis", "view": "user_features"}
    val = lambda name: registry.get_sample_value(name, labels) or 0.0  # noqa: E731
    m0, n0, a0 = val("features_missing_entities_total"), val("features_null_values_total"), val("features_age_seconds_count")
    await reader.get_many([{"user_id": MISSING_ID}, {"user_id": NAN_ID}, {"user_id": 1}])
    assert val("features_missing_entities_total") == m0 + 1
    assert val("features_null_values_total") == n0 + 16 + 2
    assert a0 + 1 >= val("features_age_seconds_count") >= 1  # sampled: at most one per read
    assert val("features_age_seconds_sum") > 0
    assert val("features_read_seconds_count") == reader.reads
    assert "circuit=closed" in repr(reader)


async def test_undecodable_value_follows_the_policy(own_redis, redis_repo):
    import redis as sync_redis

    from features import FeatureUnavailable
    from features.layout import RedisLayout
    from features.metadata import load_view_spec

    ws, store, _ = redis_repo
    layout = RedisLayout.from_spec(load_view_spec(store))
    key = layout.encode_key({"user_id": 424242})
    client = sync_redis.Redis(port=own_redis.port)
    client.hset(key, mapping={layout.fields[0]: b"\x12\x03abc", layout.fields[-1]: b"\x08\x01"})  # a string_val
    registry = CollectorRegistry()
    r = await open_reader(ws.path, registry=registry)
    try:
        with pytest.raises(FeatureUnavailable, match="undecodable"):
            await r.get({"user_id": 424242})
        assert registry.get_sample_value(
            "features_store_errors_total", {"store": "redis", "view": "user_features", "reason": "decode"}) == 1
        assert not (await r.get({"user_id": 1})).defaulted  # the circuit stayed closed
    finally:
        await r.close()
        client.delete(key)
        client.close()


async def test_freshness_is_sampled_at_most_once_per_interval(own_redis, redis_repo):
    from features.metadata import load_view_spec
    from features.metrics import ReaderMetrics
    from features.resp import RedisTarget, RespClient

    _, store, frame = redis_repo
    now = [100.0]
    registry = CollectorRegistry()
    policy = FailurePolicy()
    r = RedisFeatureReader(load_view_spec(store), RespClient(RedisTarget.from_url(own_redis.url), 1.0), policy,
                           ReaderMetrics(registry, "redis", "user_features"), clock=lambda: now[0], age_every_s=0.5)
    labels = {"store": "redis", "view": "user_features"}
    count = lambda: registry.get_sample_value("features_age_seconds_count", labels)  # noqa: E731
    uid = int(frame.user_id.iloc[0])
    try:
        await r.get({"user_id": uid})
        assert count() == 1  # the first read is sampled
        stored = registry.get_sample_value("features_age_seconds_sum", labels)
        assert stored > 0
        now[0] += 0.4
        await r.get({"user_id": uid})
        await r.get_many([{"user_id": uid}] * 3)
        assert count() == 1  # within the interval: no sample
        now[0] += 0.2
        await r.get({"user_id": MISSING_ID})
        assert count() == 1  # a read with no stored row has no age to sample
        await r.get({"user_id": uid})
        assert count() == 2  # interval passed: sampled again
        assert r.reads == 5
    finally:
        await r.close()


async def test_close_ends_every_wait_and_refuses_later_gets(redis_repo):
    ws, _, _ = redis_repo
    r = await open_reader(ws.path, registry=CollectorRegistry())
    await r.get({"user_id": 1})  # connected
    in_flight = asyncio.ensure_future(r.get_many([{"user_id": i} for i in range(1, 30)]))
    await asyncio.sleep(0)  # written, not yet answered
    queued = asyncio.ensure_future(r.get({"user_id": 2}))
    await asyncio.sleep(0)  # queued for the next turn's flush
    await r.close()
    done, pending = await asyncio.wait([in_flight, queued], timeout=2.0)
    assert not pending  # nobody is left waiting
    assert queued.cancelled()
    assert in_flight.cancelled() or in_flight.exception() is not None or len(in_flight.result()) == 29
    with pytest.raises(RuntimeError, match="closed"):
        await r.get({"user_id": 3})
    with pytest.raises(RuntimeError, match="closed"):
        await r.get_many([{"user_id": 3}])
