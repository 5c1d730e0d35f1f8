"""Fixtures of the pipelines tests: a private work dir (its own MLflow sqlite store and Feast
repo) and a private Redis key prefix `pipelines:test-<id>:`, deleted afterwards."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import missing

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        missing(f"Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    from pipelines.cli import drop_prefix
    p = f"pipelines:test-{uuid.uuid4().hex[:8]}:"
    yield p
    drop_prefix(redis_url, p)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipelines-work")
