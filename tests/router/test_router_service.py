"""RouterService against Redis faults: keeps the last good config, resyncs when Redis returns.

Faults come from a TCP proxy in front of the real Redis (tests/faults/proxy.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from router import RouterService
from router.config import default_experiments
from router.errors import StoreUnavailable

from faults.proxy import FaultProxy
from _router_helpers import experiment_dict


def proxied(proxy: FaultProxy) -> aioredis.Redis:
    # redis-py's default retry policy (3 retries, backoff up to 10 s) would hide the outage
    # for tens of seconds; a gateway should configure a short one like this too.
    return aioredis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1.0, socket_connect_timeout=1.0,
                          retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1))


def demo(a: float, b: float) -> dict:
    return experiment_dict({"a": a, "b": b}, name="clf-demo", salt="demo-1")


async def wait_for(pred, timeout: float) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def weight_b(svc: RouterService) -> float:
    return svc.router.experiment("clf-demo").config.variant("b").weight


@pytest.fixture
def proxy():
    with FaultProxy(("127.0.0.1", 6379), name="router-redis") as p:
        yield p


async def test_keeps_last_good_config_and_resyncs(redis_client, prefix, proxy) -> None:
    via_proxy = proxied(proxy)
    replica = RouterService(via_proxy, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix,
                            backoff_initial_s=0.05, backoff_max_s=0.3, flush_interval_s=0.1)
    writer = RouterService(redis_client, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix)
    await replica.start()
    try:
        await writer.put_experiment("clf-demo", demo(70, 30), "ops")
        await wait_for(lambda: weight_b(replica) == 30, 1.0)

        proxy.reset()
        await wait_for(lambda: not replica.connected, 3.0)
        assert replica.router.assign("clf", "u-1").experiment == "clf-demo"  # still serving
        assert weight_b(replica) == 30
        await writer.put_experiment("clf-demo", demo(40, 60), "ops")  # while the replica is cut off
        with pytest.raises(StoreUnavailable):
            await replica.put_experiment("clf-demo", demo(10, 90), "ops")
        assert weight_b(replica) == 30
        assert "redis=down" in repr(replica)

        proxy.pass_through()
        took = await wait_for(lambda: weight_b(replica) == 60, 3.0)
        assert replica.connected and took < 3.0
        # and the subscription works again after the reconnect
        await writer.put_experiment("clf-demo", demo(50, 50), "ops")
        await wait_for(lambda: weight_b(replica) == 50, 1.0)
    finally:
        await replica.stop()
        await via_proxy.aclose()


async def test_starts_on_initial_config_when_redis_is_down(redis_client, prefix, proxy) -> None:
    proxy.reset()
    via_proxy = proxied(proxy)
    writer = RouterService(redis_client, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix)
    await writer.put_experiment("clf-demo", demo(90, 10), "ops")
    svc = RouterService(via_proxy, default_experiments(), {}, CollectorRegistry(), key_prefix=prefix,
                        backoff_initial_s=0.05, backoff_max_s=0.2)
    changes = []
    svc.on_change(lambda r: changes.append(r))
    await svc.start()
    try:
        assert weight_b(svc) == 50 and not svc.connected  # the initial (demo) config
        proxy.pass_through()
        await wait_for(lambda: weight_b(svc) == 10, 3.0)
        assert len(changes) == 1 and changes[0] is svc.router
    finally:
        await svc.stop()
        await via_proxy.aclose()


async def test_swap_is_atomic_under_concurrent_reads(redis_client, prefix, registry) -> None:
    svc = RouterService(redis_client, default_experiments(), {}, registry, key_prefix=prefix)
    await svc.start()
    seen: set[tuple[str, str]] = set()
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            router = svc.router
            a = router.assign("clf", "unit-42")
            seen.add((a.variant, a.target.version))
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    try:
        for a, b in ((0, 100), (100, 0), (0, 100)):
            await svc.put_experiment("clf-demo", demo(a, b), "ops")
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await svc.stop()
    assert seen <= {("a", "1"), ("b", "2")}  # never a variant paired with another's target
