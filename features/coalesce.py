"""Coalescing of concurrent single-entity requests into one store read per event-loop turn.

Requests submitted in the same loop turn are flushed together on the next turn (the first
submit starts a task, whose first step runs one turn later, like ``call_soon``), in batches of
at most ``max_batch``. ``take_batch`` is the pure decision; the flush only starts the I/O.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

__all__ = ["Coalescer", "take_batch"]

K = TypeVar("K")
R = TypeVar("R")
Item = tuple[K, "asyncio.Future[R]"]


def take_batch(pending: list, max_batch: int) -> tuple[list, list]:
    """Split ``pending`` into (the next batch, the rest), oldest first."""
    return pending[:max_batch], pending[max_batch:]


class Coalescer(Generic[K, R]):
    """Collects keys, calls ``fetch(keys)`` once per batch, hands each caller its own result.

    ``fetch`` must return one result per key, in order. If it raises, every caller in the
    batch gets that exception.
    """

    __slots__ = ("_fetch", "_max_batch", "_pending", "_scheduled", "_tasks", "_closed")

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Sequence[R]]], max_batch: int) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: list[Item] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    async def submit(self, key: K) -> R:
        if self._closed:
            raise RuntimeError("reader is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((key, fut))
        if not self._scheduled:
            # A new task's first step runs on the next loop turn: that is the flush, and the
            # batch's read then runs in the same task (no call_soon hop, no second task).
            self._scheduled = True
            self._track(loop.create_task(self._drain()))
        return await fut

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        self._scheduled = False
        batch, rest = take_batch(self._pending, self._max_batch)
        self._pending = []
        loop = asyncio.get_running_loop()
        while rest:  # beyond max_batch: further reads, concurrently
            more, rest = take_batch(rest, self._max_batch)
            self._track(loop.create_task(self._run(more)))
        await self._run(batch)

    async def _run(self, batch: list[Item]) -> None:
        live = [(k, f) for k, f in batch if not f.done()]  # callers cancelled meanwhile drop out
        if not live:
            return
        try:
            results = await self._fetch([k for k, _ in live])
        except asyncio.CancelledError:
            for _, f in live:
                f.cancel()
            raise
        except Exception as exc:
            for _, f in live:
                if not f.done():
                    f.set_exception(exc)
            return
        for (_, f), r in zip(live, results):
            if not f.done():
                f.set_result(r)

    async def close(self) -> None:
        """Stop accepting keys, fail what is queued, and wait for reads in flight."""
        self._closed = True
        for _, f in self._pending:
            f.cancel()
        self._pending = []
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<Coalescer [queued {len(self._pending)} | in flight {len(self._tasks)}]>"
