"""Per-target micro-batcher: many requests' rows in, one Triton call out.

Requests carry named arrays (one per model input). For a batchable model they are stacked
per input along dimension 0 and the outputs split back by each request's row count;
requests whose non-batch dimensions differ (variable-length inputs) only share a batch with
requests of the same shape (their batch key), never padded or faked ragged. A model with
`max_batch_size: 0` is passed through one request per call, its arrays untouched.

The decision (`take_batch`) is pure and tested without a server; `MicroBatcher` does the
I/O. A batch is flushed when it reaches `max_rows`, or on the next event-loop turn after
the first row arrived (`max_delay_s` = 0, the best setting measured here: the gateway is
CPU-bound, so waiting only adds latency) or after `max_delay_s` on other machines. Every
waiter is answered by its own deadline, whatever Triton does (`Deadlines`: one timer per
batcher, not one per request).

Calls in flight (`may_send`, pure too): `max_in_flight` always, and up to `max_joined` more
while the call that opened the current round is younger than `join_window_s`, set from the
model's dynamic-batching queue delay. Such a call still sits in Triton's queue, waiting for
company, so a second call sent now joins the same model execution instead of waiting for the
next one: at low concurrency every small batch would otherwise pay the whole delay. Under CPU
saturation the loop seldom comes back inside the window, so the gateway keeps its one large
batch per round (a second call whenever possible halved it: DEVELOPERS.md). Off by default
(`max_joined_batches` 0): with a short delay a request seldom arrives inside the window.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from heapq import heapify, heappop, heappush
from typing import Awaitable, Callable

import numpy as np

from gateway.errors import DeadlineExceeded, GatewayError, Internal, Overloaded, ShuttingDown, TritonRefused

Arrays = dict[str, np.ndarray]
InferFn = Callable[[Arrays, float], Awaitable[Arrays]]
_SCAN = 64   # queued requests of another shape a batch may look past
# uvloop's clock and timers count whole milliseconds: a deadline timer may fire up to one
# early, and a deadline that close is due (a per-request timer did the same).
_CLOCK_SLACK_S = 0.001
_COMPACT = 1024   # answered entries the deadline heap may hold before it is swept


class BatchInfo:
    """What one Triton call looked like; shared by every request in the batch."""

    __slots__ = ("rows", "requests", "t_sent", "t_done")

    def __init__(self, rows: int, requests: int, t_sent: float) -> None:
        self.rows, self.requests, self.t_sent, self.t_done = rows, requests, t_sent, t_sent


class Pending:
    __slots__ = ("inputs", "n", "key", "future", "deadline", "t_enqueued")

    def __init__(self, inputs: Arrays, n: int, key: object, future: asyncio.Future, deadline: float,
                 now: float) -> None:
        self.inputs, self.n, self.key, self.future = inputs, n, key, future
        self.deadline, self.t_enqueued = deadline, now


def take_batch(queue: deque[Pending], max_rows: int, now: float,
               max_requests: int = 1 << 30) -> tuple[list[Pending], list[Pending]]:
    """Pop the next batch (≤ max_rows rows, ≤ max_requests requests, FIFO, one batch key)
    off `queue`; also return the entries already answered (timed out, cancelled) or past
    their deadline, which must not be sent. Entries of another key keep their place."""
    batch: list[Pending] = []
    dropped: list[Pending] = []
    skipped: list[Pending] = []
    rows = 0
    key: object = None
    while queue:
        head = queue[0]
        if head.future.done() or head.deadline <= now:
            dropped.append(queue.popleft())
            continue
        if batch and head.key != key:
            if len(skipped) >= _SCAN:
                break
            skipped.append(queue.popleft())
            continue
        if rows and (rows + head.n > max_rows or len(batch) >= max_requests):
            break
        batch.append(queue.popleft())
        rows += head.n
        key = head.key
    if skipped:
        queue.extendleft(reversed(skipped))
    return batch, dropped


def may_send(in_flight: int, max_in_flight: int, round_age_s: float, join_window_s: float,
             max_joined: int) -> bool:
    """Whether one more Triton call may leave now: below `max_in_flight` always; beyond it, up
    to `max_joined` more while the call that opened this round (`round_age_s` ago) is still
    inside Triton's queue delay (`join_window_s`), so that they are executed together."""
    if in_flight < max_in_flight:
        return True
    return in_flight < max_in_flight + max_joined and round_age_s < join_window_s


class Deadlines:
    """Every waiter of one batcher answered by its deadline, behind one timer.

    A uvloop timer per request (`call_at` + `cancel`) cost ~8 µs here, a heap push ~1.5 µs.
    The one timer is armed at the earliest deadline; when it fires it drops the entries already
    answered, fails those due and re-arms at the next one still waiting, so in steady state it
    fires about once per timeout, not once per request. Answered entries stay in the heap until
    then or until it doubles in size, when it is swept (amortised O(1) per request).
    """

    __slots__ = ("_heap", "_handle", "_at", "_sweep_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Pending]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf
        self._sweep_at = _COMPACT

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def armed_at(self) -> float:
        """The perf_counter time the timer is armed for (inf: none)."""
        return self._at

    def add(self, p: Pending, loop: asyncio.AbstractEventLoop) -> None:
        heappush(self._heap, (p.deadline, id(p), p))
        if p.deadline < self._at:
            self._arm(loop, p.deadline)
        elif len(self._heap) >= self._sweep_at:
            heap = [e for e in self._heap if not e[2].future.done()]
            heapify(heap)
            self._heap = heap
            self._sweep_at = max(_COMPACT, 2 * len(heap))

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._handle = loop.call_at(loop.time() + max(0.0, deadline - time.perf_counter()), self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle, self._at = None, math.inf
        heap = self._heap
        due = time.perf_counter() + _CLOCK_SLACK_S
        while heap:
            deadline, _, p = heap[0]
            if not p.future.done():
                if deadline > due:
                    self._arm(loop, deadline)
                    return
                p.future.set_exception(DeadlineExceeded("request deadline exceeded"))
            heappop(heap)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, math.inf


class MicroBatcher:
    """One queue and one flush loop per Triton target (model + version)."""

    def __init__(self, name: str, infer: InferFn, *, max_rows: int = 128, max_queue_rows: int = 4096,
                 max_in_flight: int = 8, max_delay_s: float = 0.0, max_requests: int = 1 << 30,
                 on_batch: Callable[[BatchInfo], None] | None = None, batchable: bool = True,
                 keyed: bool = False, join_window_s: float = 0.0, max_joined: int = 0) -> None:
        """`max_requests=1` turns batching off: one Triton call per request. `batchable=False`
        (a model with max_batch_size 0): every request is one call of one "row". `keyed`: the
        model has variable non-batch dimensions, so shapes decide who shares a batch.
        `join_window_s`, `max_joined`: see `may_send`."""
        self.name = name
        self.batchable, self.keyed = batchable, keyed
        self.max_requests = max_requests
        self._infer = infer
        self.max_rows, self.max_queue_rows = max_rows, max_queue_rows
        self.max_in_flight, self.max_delay_s = max_in_flight, max_delay_s
        self.join_window_s, self.max_joined = join_window_s, max_joined
        self._t_round = 0.0   # when the call that opened the current round left
        self._deadlines = Deadlines()
        self._on_batch = on_batch
        self._queue: deque[Pending] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._scheduled = False
        self._closed = False
        self._tasks: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Smoothed duration of a Triton call: a request with less budget left than this
        # cannot be answered in time, so it is dropped before it enters a batch.
        self.service_ewma_s = 0.0

    def __repr__(self) -> str:
        return (f"<MicroBatcher {self.name} [queued {self._queued_rows} rows | "
                f"in flight {self._in_flight}]>")

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def in_flight(self) -> int:
        """Triton calls sent and not yet answered."""
        return self._in_flight

    def submit(self, inputs: Arrays, deadline: float) -> asyncio.Future:
        """Queue one request's named arrays (batch dimension first for a batchable model);
        the future resolves to (its outputs by name, BatchInfo).

        Raises Overloaded at once when the queue is full rather than queueing into a timeout.
        """
        if self._closed:
            raise ShuttingDown(f"{self.name} is draining")
        if self.batchable:
            first = next(iter(inputs.values()))
            n = first.shape[0]
            key = tuple(a.shape[1:] for a in inputs.values()) if self.keyed else None
        else:
            n, key = 1, None
        if n > self.max_rows:
            raise Overloaded(f"{n} rows exceed the batch limit of {self.max_rows}")
        if self._queued_rows + n > self.max_queue_rows:
            raise Overloaded(f"queue for {self.name} is full")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        fut = loop.create_future()
        pending = Pending(inputs, n, key, fut, deadline, now)
        # Safety net: the waiter is answered at its deadline even if Triton never replies.
        self._deadlines.add(pending, loop)
        self._queue.append(pending)
        self._queued_rows += n
        self._idle.clear()
        if self._queued_rows >= self.max_rows or len(self._queue) >= self.max_requests:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self.max_delay_s > 0:
                loop.call_later(self.max_delay_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue:
            now = time.perf_counter()
            if not may_send(self._in_flight, self.max_in_flight, now - self._t_round, self.join_window_s,
                            self.max_joined):
                break
            # The margin is capped so that a slow spell can never starve short-deadline callers.
            cutoff = now + min(self.service_ewma_s, 0.1)
            batch, dropped = take_batch(self._queue, self.max_rows, cutoff, self.max_requests)
            for p in dropped:
                self._queued_rows -= p.n
                _finish(p, None, None, DeadlineExceeded("deadline cannot be met"))
            if not batch:
                continue
            self._queued_rows -= sum(p.n for p in batch)
            if self._in_flight < self.max_in_flight:
                self._t_round = now
            self._in_flight += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._check_idle()

    async def _run(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            x = batch[0].inputs
        else:
            x = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        t_sent = time.perf_counter()
        info = BatchInfo(sum(p.n for p in batch), len(batch), t_sent)
        timeout = max(p.deadline for p in batch) - t_sent
        try:
            try:
                out = await self._infer(x, timeout)
            except TritonRefused:
                if len(batch) == 1:
                    raise
                # The model refused the batch for one request's values: ask again one request
                # at a time, so that only the refused request gets the 400.
                await asyncio.gather(*(self._alone(p, info) for p in batch))
                return
            info.t_done = time.perf_counter()
            self.service_ewma_s += 0.1 * ((info.t_done - t_sent) - self.service_ewma_s)
            if len(batch) == 1:
                _finish(batch[0], out, info, None)
            elif len(out) == 1:  # the common case, kept lean: one output to slice
                ((name, y),) = out.items()
                start = 0
                for p in batch:
                    end = start + p.n
                    _finish(p, {name: y[start:end]}, info, None)
                    start = end
            else:
                start = 0
                for p in batch:
                    end = start + p.n
                    _finish(p, {k: v[start:end] for k, v in out.items()}, info, None)
                    start = end
        except (Exception, asyncio.CancelledError) as exc:
            # A bug in the infer call stays chained (`Internal`): the pipeline logs it once.
            err = exc if isinstance(exc, GatewayError) else ShuttingDown("batch cancelled") \
                if isinstance(exc, asyncio.CancelledError) else Internal(exc)
            for p in batch:
                _finish(p, None, None, err)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._in_flight -= 1
            if self._on_batch is not None:
                self._on_batch(info)
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            self._check_idle()

    async def _alone(self, p: Pending, info: BatchInfo) -> None:
        try:
            out = await self._infer(p.inputs, p.deadline - time.perf_counter())
        except (Exception, asyncio.CancelledError) as exc:
            _finish(p, None, None, exc if isinstance(exc, GatewayError) else
                    ShuttingDown("batch cancelled") if isinstance(exc, asyncio.CancelledError) else Internal(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        info.t_done = time.perf_counter()
        _finish(p, out, info, None)

    def _check_idle(self) -> None:
        if not self._queue and self._in_flight == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Stop taking rows, answer everything queued or in flight, within `timeout`."""
        self._closed = True
        if self._queue and not self._scheduled:
            self._flush()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            while self._queue:
                _finish(self._queue.popleft(), None, None, ShuttingDown("gateway shutting down"))
            self._queued_rows = 0
        self._deadlines.close()


def _finish(p: Pending, out: Arrays | None, info: BatchInfo | None, err: BaseException | None) -> None:
    if p.future.done():
        return
    if err is not None:
        p.future.set_exception(err)
    else:
        p.future.set_result((out, info))
