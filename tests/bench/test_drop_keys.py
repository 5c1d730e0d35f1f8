"""`bench.targets.drop_keys`: a benchmark gateway's Redis keys go after its run, and nothing
outside a `bench-` prefix is ever touched (the real Redis at 127.0.0.1:6379)."""

from __future__ import annotations

from types import SimpleNamespace

import redis

from bench.targets import DEFAULT_REDIS_URL, bench_prefix, drop_keys

from tests.conftest import require


def _redis() -> redis.Redis:
    r = redis.Redis.from_url(DEFAULT_REDIS_URL, socket_timeout=5)
    try:
        ok = r.ping()
    except redis.RedisError:
        ok = False
    require(ok, f"Redis does not answer at {DEFAULT_REDIS_URL}")
    return r


def test_drop_keys_removes_the_run_s_keys_and_nothing_else() -> None:
    r = _redis()
    mine, other = bench_prefix("t"), bench_prefix("t")
    outside = "test-dropkeys-" + mine.split("-")[-1]
    try:
        for i in range(1_200):                       # over two UNLINK batches
            r.sadd(f"{mine}router:units:clf-demo:s:{'ab'[i % 2]}{i // 2 // 500}", f"u{i}")
            r.set(f"{mine}k{i}", 1)
        r.xadd(f"{mine}predictions", {"x": 1})
        r.set(f"{other}k", 1)
        r.set(f"{outside}k", 1)
        # the Redis is the one the gateway was told to use (here by its flag)
        gw = SimpleNamespace(env={"INFERGATE_REDIS_KEY_PREFIX": mine}, args=("--redis-url", DEFAULT_REDIS_URL))
        n = drop_keys(gw)  # type: ignore[arg-type]
        assert n == 1_200 + 4 + 1
        assert list(r.scan_iter(match=mine + "*")) == []
        assert r.exists(f"{other}k") and r.exists(f"{outside}k")
        # a gateway on a prefix that is not a benchmark's is left alone
        assert drop_keys(SimpleNamespace(env={"INFERGATE_REDIS_KEY_PREFIX": outside}, args=())) == 0  # type: ignore[arg-type]
        assert drop_keys(SimpleNamespace(env={}, args=())) == 0  # type: ignore[arg-type]
        assert r.exists(f"{outside}k")
    finally:
        for p in (mine, other, outside):
            keys = list(r.scan_iter(match=p + "*"))
            if keys:
                r.delete(*keys)
        r.close()
