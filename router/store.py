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

from .errors import StoreUnavailable

__all__ = ["StoredExperiment", "ExperimentStore"]

log = logging.getLogger(__name__)
_EXPOSURE_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    name: str
    version: int
    config: dict[str, Any]  # unvalidated; the service validates
    updated_at: float  # unix seconds (a timestamp, not a duration)
    token_id: str


class ExperimentStore:
    """Async access to the router's Redis keys; stateless apart from the client it is given."""

    __slots__ = ("_redis", "_p", "channel", "history_limit")

    def __init__(self, redis: Redis, key_prefix: str = "infergate:", history_limit: int = 1000) -> None:
        self._redis = redis
        self._p = f"{key_prefix}router:"
        self.channel = f"{self._p}changes"
        self.history_limit = history_limit

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
                                             float(rec["updated_at"]), str(rec["token_id"]))
            except (ValueError, KeyError, TypeError) as e:
                # Someone wrote the key by hand; skip it rather than stop syncing the others.
                log.error("router: stored experiment %r is malformed (%s); ignored", name, type(e).__name__)
        return out

    async def put(self, name: str, config: dict[str, Any], token_id: str) -> int:
        """Store a validated config, append to history and notify replicas; returns the version."""
        try:
            version = int(await self._redis.hincrby(f"{self._p}versions", name, 1))  # type: ignore[misc]
            now = time.time()
            rec = orjson.dumps({"version": version, "config": config, "updated_at": now, "token_id": token_id})
            hist = orjson.dumps({"version": version, "at": now, "token_id": token_id, "config": config})
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(f"{self._p}experiments", name, rec)  # type: ignore[arg-type]
                pipe.lpush(f"{self._p}history:{name}", hist)
                pipe.ltrim(f"{self._p}history:{name}", 0, self.history_limit - 1)
                pipe.publish(self.channel, orjson.dumps({"experiment": name, "version": version}))
                await pipe.execute()
        except _STORE_ERRORS as e:
            raise StoreUnavailable(f"storing experiment {name!r}: {type(e).__name__}") from e
        return version

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

    def __repr__(self) -> str:
        return f"<ExperimentStore prefix={self._p!r}>"
