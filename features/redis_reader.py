"""The fast path: one pipelined HMGET round trip per coalesced batch against Feast's Redis layout.

Concurrent ``get`` calls in one event-loop turn are flushed together on the next turn (one
``call_soon``), written as one pipelined payload, and answered from the connection's
``data_received`` through a callback: no task, coroutine or extra future per read. Redis errors
are translated here, at the I/O edge, into FeatureUnavailable (or defaults, by policy).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any, Callable, Mapping, Sequence

from features.base import ReaderBase
from features.codec import BatchDecoder, decode_timestamp
from features.errors import DecodeError, FeatureUnavailable
from features.layout import RedisLayout
from features.metrics import ReaderMetrics
from features.policy import FailurePolicy
from features.resp import RespClient, RespTimeout, future_callback
from features.row import EntityValue, FeatureRow
from features.spec import ViewSpec

__all__ = ["RedisFeatureReader"]

# Receives a batch's rows, or the exception every caller in it gets. Must not raise.
Deliver = Callable[[list[FeatureRow] | None, BaseException | None], None]


def _settle_each(futs: list[asyncio.Future], rows: list[FeatureRow] | None, exc: BaseException | None) -> None:
    """Coalesced ``get`` calls: one future per caller (callers cancelled meanwhile are skipped)."""
    if exc is None:
        for f, row in zip(futs, rows):  # type: ignore[arg-type]
            if not f.done():
                f.set_result(row)
    else:
        for f in futs:
            if not f.done():
                f.set_exception(exc)


class RedisFeatureReader(ReaderBase):
    """Reads one feature view from Redis, coalescing concurrent ``get`` calls into one round trip.

    ``reads`` counts the Redis round trips that were answered. Failures follow the policy (see
    ``features.policy``); a value that cannot be decoded fails its batch the same way, without
    tripping the circuit. The wait for a reply is bounded by ``policy.timeout_s`` (the
    connection's watchdog), so every ``get`` ends.
    """

    __slots__ = ("_layout", "_conns", "_queue", "_closed", "_wall", "_decoder", "_age_every_s",
                 "_next_age_sample")

    def __init__(
        self,
        spec: ViewSpec,
        conns: RespClient,
        policy: FailurePolicy,
        metrics: ReaderMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        age_every_s: float = 0.1,
    ) -> None:
        self._layout = RedisLayout.from_spec(spec)  # refuses unsupported layouts
        super().__init__(spec, policy, metrics, clock)
        self._conns = conns
        self._decoder = BatchDecoder(self.width, self._defaults, spec.all_float32)
        self._wall = wall  # wall clock: only to compare with stored event timestamps
        self._age_every_s = age_every_s  # freshness sampling interval (0: every read)
        self._next_age_sample = 0.0
        self._queue: list[tuple[bytes, asyncio.Future]] = []  # gets of this loop turn, flushed next turn
        self._closed = False

    async def get(self, entity: Mapping[str, EntityValue]) -> FeatureRow:
        """The row of one entity. Raises BadEntity at once; FeatureUnavailable by policy."""
        key = self._layout.encode_key(entity)
        if self._closed:
            raise RuntimeError("reader is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        queue = self._queue
        queue.append((key, fut))
        if len(queue) == 1:  # the first get of this turn schedules the flush
            loop.call_soon(self._flush)
        return await fut

    async def get_many(self, entities: Sequence[Mapping[str, EntityValue]]) -> list[FeatureRow]:
        """Rows of several entities, in order, in one round trip (chunked by ``max_batch``)."""
        keys = [self._layout.encode_key(e) for e in entities]
        if self._closed:
            raise RuntimeError("reader is closed")
        if not keys:
            return []
        loop = asyncio.get_running_loop()
        step = self._policy.max_batch
        futs = []
        for i in range(0, len(keys), step):
            fut = loop.create_future()
            self._read(keys[i:i + step], future_callback(fut))
            futs.append(fut)
        if len(futs) == 1:
            return await futs[0]
        parts = await asyncio.gather(*futs)
        return [row for part in parts for row in part]

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        step = self._policy.max_batch
        for i in range(0, len(queue), step):
            live = [item for item in queue[i:i + step] if not item[1].done()]  # cancelled callers drop out
            if live:
                self._read([k for k, _ in live], partial(_settle_each, [f for _, f in live]))

    def _read(self, keys: list[bytes], deliver: Deliver) -> None:
        """Start one round trip for ``keys``; ``deliver`` gets its outcome, always exactly once."""
        if not self._circuit.allow():
            self._metrics.circuit_open.inc()
            self._fail(len(keys), deliver, "circuit open after repeated store failures", None)
            return
        self._conns.send(self._layout.hmget_commands(keys), len(keys),
                         partial(self._on_reply, len(keys), deliver, self._clock()))

    def _on_reply(self, n: int, deliver: Deliver, started: float, replies: list | None,
                  exc: BaseException | None) -> None:
        m = self._metrics
        try:
            if exc is not None:
                self._circuit.failure()
                if isinstance(exc, RespTimeout):
                    m.timeouts.inc()
                    return self._fail(n, deliver, f"Redis read timed out after {self._policy.timeout_s}s", exc)
                m.conn_errors.inc()
                return self._fail(n, deliver, f"Redis unavailable: {exc}", exc)
            assert replies is not None
            for r in replies:
                if type(r) is not list:
                    self._circuit.failure()
                    m.conn_errors.inc()
                    return self._fail(n, deliver, f"Redis answered an HMGET with {r!r}", None)
            self._circuit.success()
            self.reads += 1
            now = self._clock()
            m.read_seconds.observe(now - started)
            m.batch_size.observe(n)
            try:
                rows = self._rows(replies, now)
            except DecodeError as err:  # the store answered; what it holds is not what the registry says
                m.decode_errors.inc()
                return self._fail(n, deliver, f"undecodable stored value: {err}", err)
            deliver(rows, None)
        except Exception as err:  # a defect here must still end every caller's wait
            deliver(None, err)

    def _rows(self, replies: list[Any], now: float) -> list[FeatureRow]:
        batch = self._decoder.decode(replies)
        values = batch.values
        if batch.clean:  # the common case: nothing to count
            out = [FeatureRow(values[0])] if len(values) == 1 else [FeatureRow(v) for v in values]
        else:
            m = self._metrics
            out = []
            for v, nulls, missing in zip(values, batch.null_counts, batch.missing):
                if nulls:
                    m.null_values.inc(nulls)
                    if missing:
                        m.missing_entities.inc()
                out.append(FeatureRow(v, missing, nulls, False))
        if now >= self._next_age_sample:  # freshness: one read's first stored row, at most once an interval
            ts = next((t for t in batch.timestamps if t is not None), None)
            if ts is not None:
                self._metrics.age_seconds.observe(self._wall() - decode_timestamp(ts))
                self._next_age_sample = now + self._age_every_s
        return out

    def _fail(self, n: int, deliver: Deliver, why: str, cause: BaseException | None) -> None:
        try:
            rows = self._unavailable(n, why, cause)
        except FeatureUnavailable as err:
            deliver(None, err)
            return
        deliver(rows, None)

    async def close(self) -> None:
        """Stop accepting gets, cancel queued ones; reads in flight fail with the connection."""
        self._closed = True
        for _, f in self._queue:
            f.cancel()
        self._queue = []
        await self._conns.aclose()
        await asyncio.sleep(0)  # let the aborted connection call back its reads in flight

    def __repr__(self) -> str:
        return (f"<RedisFeatureReader view={self._spec.view} width={self.width} reads={self.reads} "
                f"circuit={self._circuit.state} [queued {len(self._queue)}] {self._conns!r}>")
