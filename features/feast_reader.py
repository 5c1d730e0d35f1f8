"""The portable path: the same reader interface over ``FeatureStore`` for any online store.

Uses ``get_online_features_async`` where the store supports it, else the sync call on a
dedicated thread so the event loop never blocks (Feast's sqlite store has no async read).
Feast errors are translated here into FeatureUnavailable (or defaults, by policy).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Mapping, Sequence

from features.base import ReaderBase
from features.coalesce import Coalescer
from features.errors import UnsupportedLayout
from features.layout import join_key_value, value_packer
from features.metrics import ReaderMetrics
from features.policy import FailurePolicy
from features.row import EntityValue, FeatureRow
from features.spec import JoinKey, ViewSpec

__all__ = ["FeastApiReader"]


def _supports_async_read(store: Any) -> bool:
    try:
        return bool(store._get_provider().async_supported.online.read)
    except (AttributeError, NotImplementedError):
        return False


def _checker(key: JoinKey) -> Callable[[object], object]:
    """The fast path's type check for a join key; other key types are left for Feast to judge."""
    try:
        return value_packer(key)
    except UnsupportedLayout:
        return lambda v: None


class FeastApiReader(ReaderBase):
    """Reads one feature view through Feast's online API; same interface as the Redis reader.

    A row whose features are all None is reported as ``missing_entity`` (Feast does not tell an
    absent entity from one whose every value is null through this API).
    """

    __slots__ = ("_store", "_refs", "_checks", "_coalescer", "_async", "_executor")

    def __init__(self, spec: ViewSpec, store: Any, policy: FailurePolicy, metrics: ReaderMetrics,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(spec, policy, metrics, clock)
        self._store = store
        self._refs = [f"{spec.view}:{n}" for n in self.names]
        self._checks = tuple((k.name, _checker(k)) for k in spec.join_keys)
        self._coalescer: Coalescer[dict, FeatureRow] = Coalescer(self._read_rows, policy.max_batch)
        self._async = _supports_async_read(store)
        self._executor = None if self._async else ThreadPoolExecutor(1, thread_name_prefix="feast-read")

    def _entity_row(self, entity: Mapping[str, EntityValue]) -> dict:
        row = {}
        for name, check in self._checks:
            v = join_key_value(entity, name)
            check(v)  # raises BadEntity on a wrong type or range
            row[name] = v
        return row

    async def get(self, entity: Mapping[str, EntityValue]) -> FeatureRow:
        return await self._coalescer.submit(self._entity_row(entity))

    async def get_many(self, entities: Sequence[Mapping[str, EntityValue]]) -> list[FeatureRow]:
        return await self._read_rows([self._entity_row(e) for e in entities])

    async def _fetch(self, rows: list[dict]) -> dict[str, list]:
        if self._async:
            resp = await self._store.get_online_features_async(features=self._refs, entity_rows=rows)
        else:
            call = partial(self._store.get_online_features, features=self._refs, entity_rows=rows)
            resp = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        return resp.to_dict()

    async def _read_rows(self, rows: list[dict]) -> list[FeatureRow]:
        m = self._metrics
        if not rows:
            return []
        if not self._circuit.allow():
            m.circuit_open.inc()
            return self._unavailable(len(rows), "circuit open after repeated store failures")
        started = self._clock()
        try:
            async with asyncio.timeout(self._policy.timeout_s):
                data = await self._fetch(rows)
        except TimeoutError as exc:
            self._circuit.failure()
            m.timeouts.inc()
            return self._unavailable(len(rows), f"online read timed out after {self._policy.timeout_s}s", exc)
        except Exception as exc:  # any store error: the API hides the store's exception types
            self._circuit.failure()
            m.conn_errors.inc()
            return self._unavailable(len(rows), f"online read failed: {exc!r}", exc)
        self._circuit.success()
        self.reads += 1
        m.read_seconds.observe(self._clock() - started)
        m.batch_size.observe(len(rows))
        return self._to_rows(data, len(rows))

    def _to_rows(self, data: dict[str, list], n: int) -> list[FeatureRow]:
        cols = [data[name] for name in self.names]  # Feast's column order varies: go by name
        out = []
        for i in range(n):
            vals = self._defaults.copy()
            nulls = 0
            for j, col in enumerate(cols):
                v = col[i]
                if v is None:
                    nulls += 1
                else:
                    vals[j] = v
            missing = nulls == self.width
            if missing:
                self._metrics.missing_entities.inc()
            if nulls:
                self._metrics.null_values.inc(nulls)
            out.append(FeatureRow(vals, missing, nulls, False))
        return out

    async def close(self) -> None:
        await self._coalescer.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        mode = "async" if self._async else "thread"
        return (f"<FeastApiReader view={self._spec.view} store={self._spec.online_store} {mode} "
                f"width={self.width} reads={self.reads} circuit={self._circuit.state}>")
