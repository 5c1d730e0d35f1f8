"""The micro-batcher's decision (pure) and its behaviour around a backend (an async callable).

The backend here is an in-process coroutine on purpose: it is how a hang, a failure or
a slow call is produced on demand. Real-Triton behaviour is in test_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np
import pytest

from gateway.batcher import Deadlines, MicroBatcher, Pending, may_send, take_batch
from gateway.errors import DeadlineExceeded, ModelUnavailable, Overloaded, ShuttingDown, TritonRefused


def _pending(loop: asyncio.AbstractEventLoop, n: int, deadline: float, key: object = None) -> Pending:
    return Pending({"x": np.zeros((n, 2), np.float32)}, n, key, loop.create_future(), deadline, 0.0)


async def test_take_batch_respects_rows_and_order() -> None:
    loop = asyncio.get_running_loop()
    q = deque(_pending(loop, n, 10.0) for n in (3, 4, 2, 5))
    batch, dropped = take_batch(q, max_rows=9, now=1.0)
    assert [p.n for p in batch] == [3, 4, 2] and not dropped
    assert [p.n for p in q] == [5]


async def test_take_batch_drops_expired_and_cancelled() -> None:
    loop = asyncio.get_running_loop()
    late, gone, ok = _pending(loop, 1, 0.5), _pending(loop, 1, 10.0), _pending(loop, 1, 10.0)
    gone.future.cancel()
    batch, dropped = take_batch(deque([late, gone, ok]), max_rows=8, now=1.0)
    assert batch == [ok] and dropped == [late, gone]


async def test_take_batch_max_requests_one_is_unbatched() -> None:
    loop = asyncio.get_running_loop()
    q = deque(_pending(loop, 1, 10.0) for _ in range(3))
    batch, _ = take_batch(q, max_rows=8, now=1.0, max_requests=1)
    assert len(batch) == 1 and len(q) == 2


async def test_take_batch_keeps_shapes_apart_and_in_order() -> None:
    """Variable-length inputs: a batch holds one batch key; the others keep their places."""
    loop = asyncio.get_running_loop()
    q = deque(_pending(loop, 1, 10.0, key) for key in ("a", "b", "a", "b", "a"))
    batch, _ = take_batch(q, max_rows=8, now=1.0)
    assert [p.key for p in batch] == ["a", "a", "a"] and [p.key for p in q] == ["b", "b"]


async def test_several_inputs_are_stacked_and_outputs_split_by_rows() -> None:
    seen: list[dict] = []

    async def infer(x: dict, timeout: float) -> dict:
        seen.append({k: v.shape for k, v in x.items()})
        return {"sum": (x["ids"] + x["mask"]).sum(axis=1), "ids": x["ids"]}
    b = MicroBatcher("t", infer, max_rows=64, keyed=True)
    deadline = time.perf_counter() + 1
    reqs = [{"ids": np.full((n, seq), i, np.int64), "mask": np.ones((n, seq), np.int64)}
            for i, (n, seq) in enumerate([(1, 3), (2, 5), (3, 3), (1, 5)])]
    results = await asyncio.gather(*(b.submit(r, deadline) for r in reqs))
    assert sorted(map(str, seen)) == sorted(map(str, [{"ids": (4, 3), "mask": (4, 3)},
                                                     {"ids": (3, 5), "mask": (3, 5)}]))
    for r, (out, _) in zip(reqs, results):
        np.testing.assert_array_equal(out["ids"], r["ids"])
        np.testing.assert_array_equal(out["sum"], (r["ids"] + r["mask"]).sum(axis=1))


async def test_a_non_batchable_model_gets_one_request_per_call() -> None:
    seen: list[tuple] = []

    async def infer(x: dict, timeout: float) -> dict:
        seen.append(x["x"].shape)
        return {"y": x["x"].T}
    b = MicroBatcher("t", infer, max_rows=1, batchable=False)
    deadline = time.perf_counter() + 1
    xs = [np.arange(6, dtype=np.int32).reshape(2, 3) + i for i in range(3)]
    results = await asyncio.gather(*(b.submit({"x": x}, deadline) for x in xs))
    assert seen == [(2, 3)] * 3
    for x, (out, info) in zip(xs, results):
        np.testing.assert_array_equal(out["y"], x.T)
        assert info.requests == 1


async def test_a_request_larger_than_max_rows_is_refused() -> None:
    b = MicroBatcher("t", _echo([]), max_rows=4)
    with pytest.raises(Overloaded):
        b.submit({"x": np.zeros((5, 2), np.float32)}, time.perf_counter() + 1)


def _echo(calls: list[int], delay: float = 0.0):
    async def infer(x: dict, timeout: float) -> dict:
        calls.append(x["x"].shape[0])
        if delay:
            await asyncio.sleep(delay)
        return {"x": x["x"] * 2}
    return infer


async def test_requests_in_one_loop_turn_share_one_call() -> None:
    calls: list[int] = []
    b = MicroBatcher("t", _echo(calls), max_rows=64)
    deadline = time.perf_counter() + 1
    futs = [b.submit({"x": np.full((1, 2), i, np.float32)}, deadline) for i in range(10)]
    results = await asyncio.gather(*futs)
    assert calls == [10]
    for i, (out, info) in enumerate(results):
        assert out["x"].tolist() == [[2 * i, 2 * i]]
        assert info.rows == 10 and info.requests == 10


async def test_full_batch_flushes_at_once_and_splits_at_max_rows() -> None:
    calls: list[int] = []
    b = MicroBatcher("t", _echo(calls), max_rows=4)
    deadline = time.perf_counter() + 1
    futs = [b.submit({"x": np.ones((1, 2), np.float32)}, deadline) for _ in range(10)]
    await asyncio.gather(*futs)
    assert sum(calls) == 10 and max(calls) <= 4


async def test_queue_full_sheds_immediately() -> None:
    b = MicroBatcher("t", _echo([], delay=0.05), max_rows=4, max_queue_rows=6, max_in_flight=1)
    deadline = time.perf_counter() + 1
    # 4 rows leave at once as a full batch (in flight), then 6 may wait: the 11th is shed.
    futs = [b.submit({"x": np.ones((1, 2), np.float32)}, deadline) for _ in range(10)]
    assert b.queued_rows == 6
    with pytest.raises(Overloaded):
        b.submit({"x": np.ones((1, 2), np.float32)}, deadline)
    await asyncio.gather(*futs)
    assert repr(b) == "<MicroBatcher t [queued 0 rows | in flight 0]>"


async def test_every_waiter_gets_the_backend_error() -> None:
    async def failing(x: dict, timeout: float) -> dict:
        raise ModelUnavailable("triton down")
    b = MicroBatcher("t", failing)
    futs = [b.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 1) for _ in range(3)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, ModelUnavailable) for r in results)


async def test_a_hung_backend_is_answered_at_the_deadline() -> None:
    seen_timeouts: list[float] = []

    async def hang(x: dict, timeout: float) -> dict:
        seen_timeouts.append(timeout)
        await asyncio.sleep(30)
        raise AssertionError("unreachable")
    b = MicroBatcher("t", hang)
    t0 = time.perf_counter()
    fut = b.submit({"x": np.ones((1, 2), np.float32)}, t0 + 0.1)
    with pytest.raises(DeadlineExceeded):
        await fut
    elapsed = time.perf_counter() - t0
    assert 0.09 <= elapsed < 0.5
    assert 0 < seen_timeouts[0] <= 0.1
    await b.drain(0.05)


async def test_expired_requests_are_not_sent() -> None:
    calls: list[int] = []
    b = MicroBatcher("t", _echo(calls, delay=0.05), max_in_flight=1, max_rows=1)
    now = time.perf_counter()
    first = b.submit({"x": np.ones((1, 2), np.float32)}, now + 1)
    late = b.submit({"x": np.ones((1, 2), np.float32)}, now + 0.01)
    await first
    with pytest.raises(DeadlineExceeded):
        await late
    await asyncio.sleep(0.01)
    assert calls == [1]


async def test_drain_answers_in_flight_then_refuses() -> None:
    b = MicroBatcher("t", _echo([], delay=0.05))
    fut = b.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 1)
    await b.drain(1.0)
    out, _ = fut.result()
    assert out["x"].tolist() == [[2.0, 2.0]]
    with pytest.raises(ShuttingDown):
        b.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 1)


async def test_a_batch_the_model_refuses_is_retried_alone_so_only_the_bad_request_fails() -> None:
    calls: list[int] = []

    async def picky(x: dict, timeout: float) -> dict:
        calls.append(x["x"].shape[0])
        if (x["x"] < 0).any():
            raise TritonRefused("m: Triton refused the request: negative values")
        return {"y": x["x"] * 2}
    b = MicroBatcher("t", picky, max_rows=64)
    deadline = time.perf_counter() + 1
    futs = [b.submit({"x": np.full((1, 2), v, np.float32)}, deadline) for v in (1, -1, 3)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert calls == [3, 1, 1, 1]
    assert results[0][0]["y"].tolist() == [[2, 2]] and results[2][0]["y"].tolist() == [[6, 6]]
    assert isinstance(results[1], TritonRefused)


def test_may_send_joins_only_inside_the_queue_delay() -> None:
    # Below the in-flight limit: always.
    assert may_send(0, 1, 5.0, 0.0, 0) and may_send(1, 2, 5.0, 0.0, 0)
    # At it: only while the round's first call is younger than the join window, up to max_joined more.
    assert may_send(1, 1, 0.0001, 0.00025, 1)
    assert not may_send(1, 1, 0.0003, 0.00025, 1)      # the first call has left Triton's queue
    assert not may_send(2, 1, 0.0001, 0.00025, 1)      # joins used up
    assert may_send(2, 1, 0.0001, 0.00025, 2)
    assert not may_send(1, 1, 0.0, 0.0, 5)             # no queue delay: nothing to join
    assert not may_send(1, 1, 0.0001, 0.00025, 0)      # joining off


async def test_a_second_call_joins_a_young_one_and_not_an_old_one() -> None:
    calls: list[int] = []
    b = MicroBatcher("t", _echo(calls, delay=0.05), max_rows=64, max_in_flight=1,
                     join_window_s=0.02, max_joined=1)
    deadline = time.perf_counter() + 1
    first = b.submit({"x": np.ones((1, 2), np.float32)}, deadline)
    await asyncio.sleep(0.001)                           # the first call leaves
    joined = b.submit({"x": np.ones((2, 2), np.float32)}, deadline)
    await asyncio.sleep(0.001)
    assert b.in_flight == 2 and calls == [1, 2]
    third = b.submit({"x": np.ones((3, 2), np.float32)}, deadline)
    await asyncio.sleep(0.001)
    assert b.in_flight == 2 and b.queued_rows == 3      # joins used up: it waits for the round
    await asyncio.gather(first, joined, third)
    assert calls == [1, 2, 3]
    # A round older than the window is not joined.
    late = b.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 1)
    await asyncio.sleep(0.03)
    extra = b.submit({"x": np.ones((4, 2), np.float32)}, time.perf_counter() + 1)
    await asyncio.sleep(0.001)
    assert b.in_flight == 1 and b.queued_rows == 4
    await asyncio.gather(late, extra)
    assert calls == [1, 2, 3, 1, 4]


async def test_every_waiter_is_answered_by_its_own_deadline_with_one_timer() -> None:
    """Deadlines out of arrival order, a hung backend: each waiter fails at its own deadline
    (not its batch's), and the batcher holds one timer, not one per request."""
    async def hang(x: dict, timeout: float) -> dict:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")
    b = MicroBatcher("t", hang, max_rows=4, max_in_flight=1)
    t0 = time.perf_counter()
    budgets = [0.30, 0.10, 0.20, 0.05, 0.25, 0.15]   # the first 4 share the hung call, 2 queue
    futs = [b.submit({"x": np.ones((1, 2), np.float32)}, t0 + d) for d in budgets]
    assert b._deadlines.armed_at == t0 + 0.05
    answered: dict[int, float] = {}
    for i, f in enumerate(futs):
        f.add_done_callback(lambda _f, i=i: answered.__setitem__(i, time.perf_counter() - t0))
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    for i, d in enumerate(budgets):
        assert d - 0.002 <= answered[i] < d + 0.03, (i, d, answered[i])
    assert b._deadlines.armed_at == float("inf")
    await b.drain(0.05)


async def test_the_deadline_heap_is_swept_of_answered_waiters() -> None:
    b = MicroBatcher("t", _echo([]), max_rows=64)
    for _ in range(5):
        futs = [b.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 5) for _ in range(1000)]
        await asyncio.gather(*futs)
    assert len(b._deadlines) < 2100   # ~ 2x what is still waiting, floored at 1024


async def test_deadlines_fire_once_per_timeout_not_per_request() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []

    class Counting(Deadlines):
        def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
            fired.append(time.perf_counter())
            super()._fire(loop)
    d = Counting()
    ps = []
    for i in range(50):   # answered at once, deadlines 100 ms out, 1 ms apart
        p = _pending(loop, 1, time.perf_counter() + 0.1 + i * 0.001)
        d.add(p, loop)
        p.future.set_result(None)
        ps.append(p)
    live = _pending(loop, 1, time.perf_counter() + 0.3)
    d.add(live, loop)
    await asyncio.sleep(0.2)
    assert len(fired) == 1 and not live.future.done() and d.armed_at == live.deadline
    with pytest.raises(DeadlineExceeded):
        await live.future
    assert len(fired) <= 3
