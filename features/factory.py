"""Choosing and building a reader for a Feast repo, and telling whether a Redis answers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from features import speccache
from features.errors import UnsupportedLayout
from features.feast_reader import FeastApiReader
from features.metadata import load_view_spec, open_store
from features.metrics import ReaderMetrics
from features.policy import FailurePolicy
from features.resp import RedisTarget, RespClient
from features.redis_reader import RedisFeatureReader
from features.urls import feast_to_redis_url
from features.row import OnlineFeatureReader

__all__ = ["open_reader", "redis_answers"]

log = logging.getLogger(__name__)


async def open_reader(
    repo_path: str | Path,
    *,
    redis_url: str | None = None,
    policy: FailurePolicy | None = None,
    registry: CollectorRegistry = REGISTRY,
    view: str | None = None,
    allow_fallback: bool = False,
    spec_cache: bool = False,
) -> OnlineFeatureReader:
    """A reader for ``view`` (default: the repo's only feature view) of the Feast repo at ``repo_path``.

    Redis online store -> the fast ``RedisFeatureReader`` (``redis_url`` overrides the repo's
    connection string); any other store -> ``FeastApiReader``. A Redis layout the fast reader
    cannot decode exactly raises ``UnsupportedLayout`` saying why, unless ``allow_fallback``,
    which serves it through Feast's API instead. Metrics are created in ``registry`` (one
    reader per registry: a second one in the same registry is a duplicate-metric error).
    ``spec_cache`` (the command-line tool): use the spec cached beside the repo when it is
    current (``features/speccache.py``), so a Redis-backed repo is read without importing Feast.
    """
    policy = policy or FailurePolicy()
    spec = speccache.load(repo_path, view) if spec_cache else None
    store = None
    if spec is None:
        # Importing Feast and reading the registry block: keep them off the event loop.
        store = await asyncio.to_thread(open_store, repo_path)
        spec = await asyncio.to_thread(load_view_spec, store, view)
        if spec_cache:
            speccache.store(repo_path, view, spec)
    if spec.online_store == "redis":
        try:
            spec.check_fast_path()
        except UnsupportedLayout as exc:
            if not allow_fallback:
                raise
            log.warning("features: fast Redis reader refused (%s); using Feast's API", exc)
        else:
            url = redis_url or feast_to_redis_url(spec.connection_string or "127.0.0.1:6379")
            metrics = ReaderMetrics(registry, "redis", spec.view)
            return RedisFeatureReader(
                spec, RespClient(RedisTarget.from_url(url), policy.timeout_s), policy, metrics
            )
    if store is None:
        store = await asyncio.to_thread(open_store, repo_path)
    metrics = ReaderMetrics(registry, f"feast-{spec.online_store}", spec.view)
    return FeastApiReader(spec, store, policy, metrics)


async def redis_answers(url: str, timeout_s: float = 0.25) -> bool:
    """Whether a Redis at ``url`` answers PING within ``timeout_s``."""
    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            return bool(await client.ping())  # type: ignore[misc]
    except (TimeoutError, RedisError, OSError, ValueError):
        return False
    finally:
        await client.aclose()
