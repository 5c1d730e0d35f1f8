"""The prediction log and the outcomes it is joined with: two bounded Redis streams.

Like KServe's payload logger or Seldon's request logging, the gateway records each answered
prediction so that outcomes reported later can be joined to the variant that served it
(`pipelines/`' ab-report does the join). Off the hot path and never blocking it:

* ``PredictionLog.record()`` (called once per answered request) appends a tuple to a bounded
  in-process deque: no I/O, no formatting, no allocation beyond the tuple. A full buffer drops
  the record and counts it (``infergate_prediction_log_dropped_total``): a Redis outage or a
  slow Redis costs log records, never latency.
* A background task takes up to ``batch`` records every ``interval_s`` and sends them as ONE
  stream entry (``XADD <prefix>predictions MAXLEN ~ maxlen/batch``, fields ``n`` and ``rows``:
  a JSON array of ``[rid, unit, exp, var, ver, ts, ms, cls]``): one Redis command per batch
  costs ~1 us of gateway CPU per prediction where one XADD per prediction cost ~21 us. A failed
  send drops that batch (counted) and the task keeps going. The stream holds at most about
  ``maxlen`` predictions (fewer when batches are partial).

A row: ``rid`` (the request's ``id``, "" when it sent none), ``unit``, ``exp``, ``var``, ``ver``
(Triton version), ``ts`` (unix seconds), ``ms`` (gateway latency), ``cls`` (the argmax class of
each output row). ``read_predictions()`` expands the entries.

Outcomes arrive by ``POST /v1/outcomes`` (``gateway/routes.py``) and go to
``<prefix>outcomes`` (fields ``rid`` or ``unit``, ``label`` or ``value``, ``exp``, ``ts``),
bounded the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("infergate")

__all__ = ["PredictionLog", "parse_outcomes", "read_predictions", "MAX_OUTCOMES", "ROW_FIELDS"]

ROW_FIELDS = ("rid", "unit", "exp", "var", "ver", "ts", "ms", "cls")

MAX_OUTCOMES = 1000          # per POST /v1/outcomes
_MAX_ID = 256


class PredictionLog:
    """Bounded buffer on the hot path, batched XADDs off it."""

    __slots__ = ("_redis", "key", "outcomes_key", "maxlen", "_buf", "_cap", "batch", "interval_s",
                 "_task", "_wake", "dropped", "_dropped_c", "_sent_c", "sent", "_closing")

    def __init__(self, redis: Any, prefix: str, registry: CollectorRegistry, *, maxlen: int = 100_000,
                 buffer: int = 10_000, batch: int = 500, interval_s: float = 0.1) -> None:
        self._redis = redis
        self.key = f"{prefix}predictions"
        self.outcomes_key = f"{prefix}outcomes"
        self.maxlen, self._cap, self.batch, self.interval_s = maxlen, buffer, batch, interval_s
        self._buf: deque = deque()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.dropped = 0
        self.sent = 0
        self._dropped_c = Counter("infergate_prediction_log_dropped", "Prediction records dropped "
                                  "(buffer full or Redis failed)", registry=registry)
        self._sent_c = Counter("infergate_prediction_log_sent", "Prediction records written to the "
                               "Redis stream", registry=registry)

    def __repr__(self) -> str:
        return f"<PredictionLog {self.key} buffered={len(self._buf)} sent={self.sent} dropped={self.dropped}>"

    # -- hot path ---------------------------------------------------------------------------
    def record(self, req: Any, a: Any, out: Any, latency_s: float) -> None:
        if len(self._buf) >= self._cap:
            self.dropped += 1
            self._dropped_c.inc()
            return
        self._buf.append((req.request_id, req.unit_id, a.experiment, a.variant, a.target.version,
                          time.time(), latency_s, out))

    # -- off the hot path -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop the writer and send what is still buffered, each within `timeout`. The writer
        also stops by itself at its next turn (`_closing`), so a cancellation that does not
        end it cannot hold the shutdown: once (2026-12-06, a worker of a two-worker gateway)
        the writer was found still looping with its cancel request consumed, and the
        shutdown waited for it for ever."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                log.warning("prediction log: the writer did not stop within %.1f s; leaving it", timeout)
            self._task = None
        try:   # what is still buffered, within a deadline
            await asyncio.wait_for(self._drain(), timeout)
        except Exception as exc:  # noqa: BLE001 - shutting down: count what is lost, say why once
            lost = len(self._buf)
            self._buf.clear()
            self._lose(lost, exc)

    async def _drain(self) -> None:
        while self._buf:
            await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.interval_s)
            while self._buf and not self._closing:
                await self.flush()
                if len(self._buf) < self.batch:
                    break

    async def flush(self) -> int:
        """Send up to ``batch`` records as one stream entry; returns how many were sent."""
        n = min(len(self._buf), self.batch)
        if not n:
            return 0
        buf = self._buf
        recs = [buf.popleft() for _ in range(n)]
        # ts and ms to the µs (as round(ts, 6) and round(ms, 3), but for the last digit), at a third of their cost
        rows = [(rid or "", unit, exp, var, ver, int(ts * 1e6 + 0.5) / 1e6, int(lat * 1e6 + 0.5) / 1e3, cls)
                for (rid, unit, exp, var, ver, ts, lat, _), cls in zip(recs, predicted_classes([r[7] for r in recs]))]
        try:
            await self._redis.xadd(self.key, {"n": n, "rows": orjson.dumps(rows)},
                                   maxlen=max(1, self.maxlen // self.batch), approximate=True)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: drop the batch, keep serving
            self._lose(n, exc)
            return 0
        self.sent += n
        self._sent_c.inc(n)
        return n

    def _lose(self, n: int, exc: BaseException) -> None:
        if n:
            self.dropped += n
            self._dropped_c.inc(n)
            log.warning("prediction log: %d records dropped: %s", n, exc)

    async def add_outcomes(self, items: list[dict[str, str]]) -> None:
        """XADD validated outcomes (see ``parse_outcomes``) in one round trip; raises on Redis errors."""
        pipe = self._redis.pipeline(transaction=False)
        for item in items:
            pipe.xadd(self.outcomes_key, item, maxlen=self.maxlen, approximate=True)
        await pipe.execute()


def _first_output(out: Any) -> Any:
    return next(iter(out.values()), None) if isinstance(out, dict) else out


def _classes_of(arr: Any) -> list[int]:
    if arr is not None and arr.ndim == 2 and arr.shape[1] > 0 and arr.dtype.kind in "fiu":
        return arr.argmax(axis=1).tolist()
    return []


def predicted_classes(outs: list[Any]) -> list[list[int]]:
    """The predicted class of each output row, per record: the argmax of the model's first output
    when it is a numeric ``[rows, classes]`` tensor, ``[]`` for other models.

    A flush's records almost always come from one model: their arrays are joined and reduced by
    one numpy call instead of one per record; records that differ in dtype, rank or width take
    the per-record path."""
    arrs = [_first_output(o) for o in outs]
    if not arrs:
        return []
    try:
        first = arrs[0]
        dt = first.dtype
        if dt.kind not in "fiu" or first.ndim != 2 or first.shape[1] == 0:
            raise ValueError("not a numeric [rows, classes] output")
        counts = []
        for a in arrs:
            if a.dtype != dt:
                raise ValueError("mixed dtypes")
            counts.append(a.shape[0])
        flat = np.concatenate(arrs).argmax(axis=1).tolist()  # ValueError when ranks or widths differ
    except (AttributeError, ValueError, TypeError):
        return [_classes_of(a) for a in arrs]
    if len(flat) == len(arrs):  # one row per record, the common case
        return [[c] for c in flat]
    out, at = [], 0
    for k in counts:
        out.append(flat[at:at + k])
        at += k
    return out


def read_predictions(entries: Any) -> list[dict[str, Any]]:
    """XRANGE entries of the predictions stream -> one dict per prediction (``ROW_FIELDS``)."""
    out = []
    for _, fields in entries:
        for row in orjson.loads(fields[b"rows"] if b"rows" in fields else fields["rows"]):
            out.append(dict(zip(ROW_FIELDS, row)))
    return out


def parse_outcomes(doc: Any) -> list[dict[str, str]]:
    """Validate ``POST /v1/outcomes``: one outcome object, or ``{"outcomes": [...]}``.

    Each outcome names ``request_id`` or ``unit_id`` (a string, or an integer unit id), and a
    ``label`` (integer) or a ``value`` (finite number); ``experiment`` (string) is optional.
    Raises ``ValueError("<field>: <what>")``.
    """
    if isinstance(doc, dict) and "outcomes" in doc:
        items = doc["outcomes"]
        if not isinstance(items, list) or not items:
            raise ValueError("outcomes: must be a non-empty array")
        if len(items) > MAX_OUTCOMES:
            raise ValueError(f"outcomes: at most {MAX_OUTCOMES} per request, got {len(items)}")
        where = "outcomes[{}]."
    elif isinstance(doc, dict):
        items, where = [doc], ""
    else:
        raise ValueError("body: must be a JSON object")
    now = f"{time.time():.6f}"
    out = []
    for i, item in enumerate(items):
        at = where.format(i)
        if not isinstance(item, dict):
            raise ValueError(f"{at or 'outcome'}: must be an object")
        unknown = set(item) - {"request_id", "unit_id", "label", "value", "experiment"}
        if unknown:
            raise ValueError(f"{at}{sorted(unknown)[0]}: unknown field")
        rec = {"ts": now}
        rid, unit = item.get("request_id"), item.get("unit_id")
        if rid is None and unit is None:
            raise ValueError(f"{at}request_id: a request_id or a unit_id is required")
        if rid is not None:
            rec["rid"] = _ident(rid, f"{at}request_id", ints=False)
        if unit is not None:
            rec["unit"] = _ident(unit, f"{at}unit_id", ints=True)
        label, value = item.get("label"), item.get("value")
        if (label is None) == (value is None):
            raise ValueError(f"{at}label: exactly one of label and value is required")
        if label is not None:
            if not isinstance(label, int) or isinstance(label, bool):
                raise ValueError(f"{at}label: must be an integer")
            rec["label"] = str(label)
        else:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{at}value: must be a finite number")
            rec["value"] = repr(float(value))
        exp = item.get("experiment")
        if exp is not None:
            rec["exp"] = _ident(exp, f"{at}experiment", ints=False)
        out.append(rec)
    return out


def _ident(v: Any, field: str, *, ints: bool) -> str:
    if ints and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_ID:
        kind = "a string or an integer" if ints else "a string"
        raise ValueError(f"{field}: must be {kind} of 1 to {_MAX_ID} characters")
    return v
