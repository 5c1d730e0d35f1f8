"""Redis persistence for experiments: stored configs, change history, change notifications
and replica-aggregated exposure counts. The only module that talks to Redis; every Redis
error becomes ``StoreUnavailable`` here.

Layout (P = key_prefix + "router:"):

* ``P experiments``  hash  name -> JSON ``{"version", "config", "updated_at", "token_id"}``
* ``P versions``     hash  name -> last version number (HINCRBY, so versions never repeat)
* ``P history:NAME`` list  newest first, JSON ``{"version", "at", "token_id", "config"}``,
  trimmed to ``history_limit`` entries
* ``P changes``      pub/sub channel; a message is ``{"experiment", "version"}``; replicas
  re-read the hash rather than trust the message, so a lost or reordered message is harmless
* ``P exposures:NAME:ALLOC`` hash variant -> count (HINCRBY from every replica)
* ``P units:NAME:ALLOC:VARIANT`` set of the distinct unit ids exposed (SADD from every
  replica; TTL ``units_ttl_s``, refreshed by every flush that adds to it)
* ``P guard:NAME:GUARD_ID:SLOT`` hash ``VARIANT|e`` -> errors, ``VARIANT|K`` -> successes in
  latency bucket K, for one ``slot_s`` time slot (HINCRBY; TTL a little over the window)
* ``P guardrail_rollbacks`` hash name -> JSON of the last guardrail rollback

A change is written by one Lua script (compare-and-set on the stored version when asked,
version increment, config, history, rollback record, notification), so two writers can
never interleave and an ``If-Match`` is checked atomically with the write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

# What a Redis outage looks like from redis-py: its own errors, socket errors, and under
# uvloop a RuntimeError ("unable to perform operation on <TCPTransport closed=True>") when a
# reset lands between connect and the first write.
_STORE_ERRORS = (RedisError, OSError, RuntimeError)

from .errors import StoreUnavailable, VersionConflict

__all__ = ["StoredExperiment", "ExperimentStore"]

log = logging.getLogger(__name__)
_EXPOSURE_TTL_S = 30 * 24 * 3600

# KEYS: versions, experiments, history, rollbacks. ARGV: name, expected version (-1: any),
# record/history/message/rollback JSON each missing its closing '"version":N}' (the script
# appends it: only it knows N), history limit, channel. Returns {1, version} or {0, current}.
_PUT_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local expected = tonumber(ARGV[2])
if expected >= 0 and cur ~= expected then return {0, cur} end
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. v .. '}')
redis.call('LPUSH', KEYS[3], ARGV[4] .. v .. '}')
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], ARGV[1], ARGV[6] .. v .. '}') end
redis.call('PUBLISH', ARGV[8], ARGV[5] .. v .. '}')
return {1, v}
"""


def _open(doc: dict[str, Any]) -> bytes:
    """JSON of ``doc`` with '"version":' appended in place of the closing brace."""
    return orjson.dumps(doc)[:-1] + (b',"version":' if doc else b'"version":')


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    name: str
    version: int
    config: dict[str, Any]  # unvalidated; the service validates
    updated_at: float  # unix seconds (a timestamp, not a duration)
    token_id: str
    reason: str | None = None  # the x-change-reason given with the change


class ExperimentStore:
    """Async access to the router's Redis keys; stateless apart from the client it is given."""

    __slots__ = ("_redis", "_p", "channel", "history_limit", "_put_script")

    def __init__(self, redis: Redis, key_prefix: str = "infergate:", history_limit: int = 1000) -> None:
        self._redis = redis
        self._p = f"{key_prefix}router:"
        self.channel = f"{self._p}changes"
        self.history_limit = history_limit
        self._put_script: Any = None  # registered on first use, where its errors are translated

    async def load_all(self) -> dict[str, StoredExperiment]:
        try:
            raw = await self._redis.hgetall(f"{self._p}experiments")  # type: ignore[misc]
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"loading experiments: {type(e).__name__}") from e
        out = {}
        for name, blob in raw.items():
            name = name.decode() if isinstance(name, bytes) else name
            try:
                rec = orjson.loads(blob)
                out[name] = StoredExperiment(name, int(rec["version"]), rec["config"],
                                             float(rec["updated_at"]), str(rec["token_id"]),
                                             rec.get("reason"))
            except (ValueError, KeyError, TypeError) as e:
                # Someone wrote the key by hand; skip it rather than stop syncing the others.
                log.error("router: stored experiment %r is malformed (%s); ignored", name, type(e).__name__)
        return out

    async def put(self, name: str, config: dict[str, Any], token_id: str, *, reason: str | None = None,
                  figures: dict[str, Any] | None = None, expected_version: int | None = None,
                  rollback: dict[str, Any] | None = None) -> int:
        """Store a validated config, append to history and notify replicas; returns the version.

        ``expected_version`` makes it a compare-and-set: ``VersionConflict`` (naming the
        stored version) when the stored version differs; 0 means "never stored". ``rollback``
        (a guardrail's) is kept as the experiment's last rollback, with the new version.
        """
        now = time.time()
        rec: dict[str, Any] = {"config": config, "updated_at": now, "token_id": token_id}
        hist: dict[str, Any] = {"at": now, "token_id": token_id, "config": config}
        if reason is not None:
            rec["reason"] = hist["reason"] = reason
        if figures is not None:
            hist["figures"] = figures
        args = [name, -1 if expected_version is None else int(expected_version), _open(rec), _open(hist),
                _open({"experiment": name}), _open({"at": now, **rollback}) if rollback else b"",
                self.history_limit, self.channel]
        keys = [f"{self._p}versions", f"{self._p}experiments", f"{self._p}history:{name}",
                f"{self._p}guardrail_rollbacks"]
        try:
            if self._put_script is None:
                self._put_script = self._redis.register_script(_PUT_LUA)
            ok, version = await self._put_script(keys=keys, args=args)
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"storing experiment {name!r}: {type(e).__name__}") from e
        if not ok:
            raise VersionConflict(name, int(version), int(expected_version or 0))
        return int(version)

    async def history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        try:
            raw = await self._redis.lrange(f"{self._p}history:{name}", 0, max(0, limit - 1))  # type: ignore[misc]
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"reading history of {name!r}: {type(e).__name__}") from e
        return [orjson.loads(x) for x in raw]

    async def add_exposures(self, name: str, alloc_id: str, deltas: dict[str, int]) -> dict[str, int]:
        """HINCRBY this replica's new exposures; returns the totals over all replicas."""
        key = f"{self._p}exposures:{name}:{alloc_id}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for variant, n in deltas.items():
                    if n:
                        pipe.hincrby(key, variant, n)
                pipe.expire(key, _EXPOSURE_TTL_S)
                pipe.hgetall(key)
                res = await pipe.execute()
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"flushing exposures of {name!r}: {type(e).__name__}") from e
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in res[-1].items()}

    async def add_units(self, name: str, alloc_id: str, units: dict[str, set[str]],
                        ttl_s: int, *, chunk: int = 1_000) -> dict[str, int]:
        """SADD this replica's newly seen units per variant; returns each variant's distinct
        count over all replicas (SCARD).

        At most ``chunk`` units per command and one command per round trip, so that neither
        this loop (redis-py packs ~0.64 µs per member, in Python) nor Redis (adding the members;
        feature reads wait behind it) is held for long; SADD is idempotent, so a failure
        part-way loses nothing the caller sends again."""
        keys = {v: f"{self._p}units:{name}:{alloc_id}:{v}" for v in units}
        try:
            for v, seen in units.items():
                batch = list(seen)
                for i in range(0, len(batch), chunk):
                    await self._redis.sadd(keys[v], *batch[i:i + chunk])
            async with self._redis.pipeline(transaction=False) as pipe:
                for v, seen in units.items():
                    if seen:
                        pipe.expire(keys[v], ttl_s)
                for key in keys.values():
                    pipe.scard(key)
                res = await pipe.execute()
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"flushing units of {name!r}: {type(e).__name__}") from e
        return {v: int(n) for v, n in zip(keys, res[-len(keys):])}

    async def add_outcomes(self, name: str, gid: str, slot: int, deltas: dict[str, int], ttl_s: int) -> None:
        """HINCRBY one time slot's outcome deltas (fields ``VARIANT|e`` / ``VARIANT|K``)."""
        key = f"{self._p}guard:{name}:{gid}:{slot}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for field, n in deltas.items():
                    pipe.hincrby(key, field, n)
                pipe.expire(key, ttl_s)
                await pipe.execute()
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"flushing outcomes of {name!r}: {type(e).__name__}") from e

    async def read_outcomes(self, name: str, gid: str, slots: range) -> dict[str, int]:
        """The outcome fields summed over ``slots`` (every replica's counts)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for slot in slots:
                    pipe.hgetall(f"{self._p}guard:{name}:{gid}:{slot}")
                res = await pipe.execute()
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"reading outcomes of {name!r}: {type(e).__name__}") from e
        out: dict[str, int] = {}
        for h in res:
            for k, v in h.items():
                k = k.decode() if isinstance(k, bytes) else k
                out[k] = out.get(k, 0) + int(v)
        return out

    async def rollbacks(self) -> dict[str, dict[str, Any]]:
        """The last guardrail rollback of every experiment that had one."""
        try:
            raw = await self._redis.hgetall(f"{self._p}guardrail_rollbacks")  # type: ignore[misc]
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"reading guardrail rollbacks: {type(e).__name__}") from e
        return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}

    def __repr__(self) -> str:
        return f"<ExperimentStore prefix={self._p!r}>"
