"""Shared fixtures: a real Redis client with a unique key prefix per test, a fresh registry."""

from __future__ import annotations

import os
import uuid

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from tests.conftest import missing

# INFERGATE_TEST_REDIS_URL: only for the test that checks a missing Redis fails under CI.
REDIS_URL = os.environ.get("INFERGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> str:
    return f"test-router-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_client(prefix: str):
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        await client.ping()
    except Exception as e:  # pragma: no cover - environment problem, not a router bug
        await client.aclose()
        missing(f"Redis not reachable at {REDIS_URL}: {e}")
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
