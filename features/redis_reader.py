"""The fast path: one pipelined HMGET round trip per coalesced batch against Feast's Redis layout.

Redis errors are translated here, at the I/O edge, into FeatureUnavailable (or defaults, by policy).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Mapping, Sequence

from features.circuit import Circuit
from features.codec import BatchDecoder, decode_timestamp
from features.coalesce import Coalescer
from features.errors import DecodeError, FeatureUnavailable
from features.layout import RedisLayout
from features.metrics import ReaderMetrics
from features.policy import FailurePolicy
from features.resp import RespClient, RespError
from features.row import EntityValue, FeatureRow
from features.spec import ViewSpec

__all__ = ["RedisFeatureReader"]


class RedisFeatureReader:
    """Reads one feature view from Redis, coalescing concurrent ``get`` calls into one round trip.

    ``reads`` counts the Redis round trips that were answered. Failures follow the policy (see
    ``features.policy``); a value that cannot be decoded fails its batch the same way, without
    tripping the circuit.
    """

    __slots__ = (
        "width", "names", "entity_keys", "reads", "_spec", "_layout", "_conns", "_policy",
        "_defaults", "_metrics", "_circuit", "_coalescer", "_wall", "_clock", "_decoder",
    )

    def __init__(
        self,
        spec: ViewSpec,
        conns: RespClient,
        policy: FailurePolicy,
        metrics: ReaderMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._layout = RedisLayout.from_spec(spec)  # refuses unsupported layouts
        self._spec = spec
        self.names: tuple[str, ...] = spec.names
        self.width = len(self.names)
        self.entity_keys: tuple[str, ...] = tuple(k.name for k in spec.join_keys)
        self.reads = 0
        self._conns = conns
        self._policy = policy
        self._defaults = policy.default_vector(self.names)
        self._decoder = BatchDecoder(self.width, self._defaults, spec.all_float32)
        self._metrics = metrics
        self._clock = clock
        self._wall = wall  # wall clock: only to compare with stored event timestamps
        self._circuit = Circuit(policy.trip_after, policy.backoff_s, policy.max_backoff_s, clock)
        self._coalescer: Coalescer[bytes, FeatureRow] = Coalescer(self._read_keys, policy.max_batch)

    async def get(self, entity: Mapping[str, EntityValue]) -> FeatureRow:
        """The row of one entity. Raises BadEntity at once; FeatureUnavailable by policy."""
        return await self._coalescer.submit(self._layout.encode_key(entity))

    async def get_many(self, entities: Sequence[Mapping[str, EntityValue]]) -> list[FeatureRow]:
        """Rows of several entities, in order, in one round trip (chunked by ``max_batch``)."""
        keys = [self._layout.encode_key(e) for e in entities]
        step = self._policy.max_batch
        if len(keys) <= step:
            return await self._read_keys(keys)
        parts = await asyncio.gather(*(self._read_keys(keys[i:i + step]) for i in range(0, len(keys), step)))
        return [row for part in parts for row in part]

    async def _read_keys(self, keys: list[bytes]) -> list[FeatureRow]:
        m = self._metrics
        if not keys:
            return []
        if not self._circuit.allow():
            m.circuit_open.inc()
            return self._unavailable(keys, "circuit open after repeated store failures")
        started = self._clock()
        try:
            async with asyncio.timeout(self._policy.timeout_s):
                replies = await self._conns.request(self._layout.hmget_commands(keys), len(keys))
        except TimeoutError as exc:
            self._circuit.failure()
            m.timeouts.inc()
            return self._unavailable(keys, f"Redis read timed out after {self._policy.timeout_s}s", exc)
        except (RespError, OSError) as exc:
            self._circuit.failure()
            m.conn_errors.inc()
            return self._unavailable(keys, f"Redis unavailable: {exc}", exc)
        if not all(type(r) is list for r in replies):
            self._circuit.failure()
            m.conn_errors.inc()
            bad = next(r for r in replies if type(r) is not list)
            return self._unavailable(keys, f"Redis answered an HMGET with {bad!r}")
        self._circuit.success()
        self.reads += 1
        m.read_seconds.observe(self._clock() - started)
        m.batch_size.observe(len(keys))
        try:
            return self._rows(replies)
        except DecodeError as exc:  # the store answered; what it holds is not what the registry says
            m.decode_errors.inc()
            return self._unavailable(keys, f"undecodable stored value: {exc}", exc)

    def _rows(self, replies: list[Any]) -> list[FeatureRow]:
        batch = self._decoder.decode(replies)
        m = self._metrics
        sampled = False
        out = []
        for values, nulls, missing, ts in zip(batch.values, batch.null_counts, batch.missing, batch.timestamps):
            if nulls:
                m.null_values.inc(nulls)
                if missing:
                    m.missing_entities.inc()
            if ts is not None and not sampled:
                m.age_seconds.observe(self._wall() - decode_timestamp(ts))
                sampled = True
            out.append(FeatureRow(values, missing, nulls, False))
        return out

    def _unavailable(self, keys: list[bytes], why: str, cause: BaseException | None = None) -> list[FeatureRow]:
        if self._policy.on_unavailable == "raise":
            raise FeatureUnavailable(f"feature view {self._spec.view!r}: {why}") from cause
        self._metrics.defaulted_rows.inc(len(keys))
        d = self._defaults
        return [FeatureRow(d.copy(), False, self.width, True) for _ in keys]

    async def close(self) -> None:
        await self._coalescer.close()
        await self._conns.aclose()

    def __repr__(self) -> str:
        return (f"<RedisFeatureReader view={self._spec.view} width={self.width} reads={self.reads} "
                f"circuit={self._circuit.state} {self._coalescer!r}>")
