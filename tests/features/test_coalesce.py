"""Coalescing and the circuit breaker, without any server."""

from __future__ import annotations

import asyncio

import pytest

from features.circuit import Circuit
from features.coalesce import Coalescer, take_batch


def test_take_batch():
    assert take_batch([1, 2, 3], 2) == ([1, 2], [3])
    assert take_batch([1], 5) == ([1], [])


async def test_same_turn_is_one_fetch_and_max_batch_splits():
    calls: list[list[int]] = []

    async def fetch(keys):
        calls.append(list(keys))
        await asyncio.sleep(0)
        return [k * 10 for k in keys]

    c = Coalescer(fetch, max_batch=4)
    out = await asyncio.gather(*(c.submit(i) for i in range(10)))
    assert out == [i * 10 for i in range(10)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert await c.submit(3) == 30  # a lone request still flushes on the next turn
    assert len(calls) == 4
    assert "queued 0" in repr(c)
    await c.close()
    with pytest.raises(RuntimeError):
        await c.submit(1)


async def test_errors_reach_every_caller_and_cancelled_callers_drop_out():
    seen: list[list[int]] = []

    async def fetch(keys):
        seen.append(list(keys))
        raise ValueError("boom")

    c = Coalescer(fetch, max_batch=8)
    t1 = asyncio.ensure_future(c.submit(1))
    t2 = asyncio.ensure_future(c.submit(2))
    await asyncio.sleep(0)  # both queued
    t2.cancel()
    res = await asyncio.gather(t1, t2, return_exceptions=True)
    assert isinstance(res[0], ValueError) and isinstance(res[1], asyncio.CancelledError)
    assert seen == [[1]]
    await c.close()


def test_circuit_opens_backs_off_and_probes():
    now = [0.0]
    c = Circuit(trip_after=2, backoff_s=1.0, max_backoff_s=3.0, clock=lambda: now[0])
    assert c.allow() and c.state == "closed"
    c.failure()
    assert c.allow()                    # one failure does not trip it
    c.failure()
    assert c.state == "open" and not c.allow()
    now[0] = 1.0
    assert c.allow()                    # the probe
    assert not c.allow()                # only one probe at a time
    c.failure()                         # failed probe: backoff doubles
    now[0] = 2.5
    assert not c.allow()
    now[0] = 3.0
    assert c.allow()
    c.success()
    assert c.state == "closed" and c.allow()
    assert "closed" in repr(c)
