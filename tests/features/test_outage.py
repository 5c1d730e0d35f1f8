"""Redis stopped, paused (timeouts) and back: the failure policy, the circuit, and recovery.

Each test owns a redis-server on a free port, filled by copying the fixture repo's keys.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from redis_proc import RedisProcess
from features import FailurePolicy, FeatureUnavailable, open_reader

IDS = list(range(1, 6))


def _copy_keys(src_url: str, dst_url: str, project: str) -> None:
    src, dst = redis.Redis.from_url(src_url), redis.Redis.from_url(dst_url)
    for key in src.scan_iter(match=b"*" + project.encode()):
        dst.restore(key, 0, src.dump(key), replace=True)
    src.close()
    dst.close()


@pytest.fixture
def owned(own_redis, redis_repo):
    ws, _, _ = redis_repo
    proc = RedisProcess().start()
    _copy_keys(own_redis.url, proc.url, ws.project)
    refill = lambda: _copy_keys(own_redis.url, proc.url, ws.project)  # noqa: E731
    yield proc, refill
    proc.stop()


async def _wait_until_served(reader, entity, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            row = await reader.get(entity)
            if not row.defaulted:
                return row
        except FeatureUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("reader did not recover")
        await asyncio.sleep(0.02)


async def test_stop_raise_then_recover(redis_repo, owned):
    ws, _, _ = redis_repo
    proc, refill = owned
    registry = CollectorRegistry()
    # backoff long enough that a slow, loaded machine still sees the circuit open on the third call
    policy = FailurePolicy(on_unavailable="raise", timeout_s=0.2, trip_after=2, backoff_s=0.5, max_backoff_s=1.0)
    reader = await open_reader(ws.path, redis_url=proc.url, policy=policy, registry=registry)
    try:
        good = await reader.get_many([{"user_id": i} for i in IDS])
        proc.stop()
        for _ in range(2):
            with pytest.raises(FeatureUnavailable, match="Redis unavailable"):
                await reader.get({"user_id": 1})
        reads = reader.reads
        t0 = time.perf_counter()
        with pytest.raises(FeatureUnavailable, match="circuit open"):
            await reader.get({"user_id": 1})
        assert time.perf_counter() - t0 < 0.05  # open circuit: no store call at all
        assert reader.reads == reads
        labels = {"store": "redis", "view": "user_features"}
        assert registry.get_sample_value("features_store_errors_total", {**labels, "reason": "circuit_open"}) >= 1
        assert registry.get_sample_value("features_store_errors_total", {**labels, "reason": "connection"}) >= 2

        proc.start()
        refill()
        row = await _wait_until_served(reader, {"user_id": 1})
        assert row.values.tobytes() == good[0].values.tobytes()
        assert "circuit=closed" in repr(reader)
    finally:
        await reader.close()


async def test_pause_times_out_with_defaults_without_stalling_the_loop(redis_repo, owned):
    ws, _, _ = redis_repo
    proc, _ = owned
    policy = FailurePolicy(on_unavailable="default", default_value=np.nan, defaults={"churn_risk": 0.5},
                           timeout_s=0.3, trip_after=1, backoff_s=0.5, max_backoff_s=1.0)
    registry = CollectorRegistry()
    reader = await open_reader(ws.path, redis_url=proc.url, policy=policy, registry=registry)
    gaps: list[float] = []

    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    try:
        good = await reader.get({"user_id": 2})
        proc.pause()
        t0 = time.perf_counter()
        rows = await asyncio.gather(*(reader.get({"user_id": i}) for i in IDS))
        elapsed = time.perf_counter() - t0
        assert 0.29 < elapsed < 1.0  # one timeout for the whole batch
        for row in rows:
            assert row.defaulted and row.null_count == 16 and not row.missing_entity
            assert row.values[reader.names.index("churn_risk")] == np.float32(0.5)
            assert np.isnan(row.values[0])
        t0 = time.perf_counter()
        assert (await reader.get({"user_id": 1})).defaulted  # circuit open: answered at once
        assert time.perf_counter() - t0 < 0.05  # far below the 0.3 s timeout
        labels = {"store": "redis", "view": "user_features"}
        assert registry.get_sample_value("features_store_errors_total", {**labels, "reason": "timeout"}) >= 1
        assert registry.get_sample_value("features_defaulted_rows_total", labels) >= 6
        proc.resume()
        row = await _wait_until_served(reader, {"user_id": 2})
        assert row.values.tobytes() == good.values.tobytes()
        assert max(gaps) < 0.15, max(gaps)  # the loop kept turning through a 0.3 s timeout
    finally:
        tick.cancel()
        await reader.close()
