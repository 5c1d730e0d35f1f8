"""Shared fixtures: one owned redis-server and two small materialised repos (Redis and sqlite).

Feast costs seconds to import and apply, so repos are built once per session.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from _features_fixture import fixture_frame
from redis_proc import RedisProcess


@pytest.fixture(scope="session")
def own_redis():
    # It listens on a unix socket too (`own_redis.unix_url`): the same keys over either transport.
    sock_dir = Path(tempfile.mkdtemp(prefix="redis-sock-"))   # short: a socket path has ~100 bytes
    proc = RedisProcess(unix_socket=str(sock_dir / "redis.sock")).start()
    yield proc
    proc.stop()
    shutil.rmtree(sock_dir, ignore_errors=True)


def _build(tmp: Path, online: str, url: str):
    from features.repo.workspace import Workspace

    ws = Workspace(tmp, project=f"t_{uuid.uuid4().hex[:10]}", online=online, redis_url=url)
    frame = fixture_frame()
    store = ws.apply(frame)
    ws.materialize(store, slices=2, progress=False)
    return ws, store, frame


@pytest.fixture(scope="session")
def redis_repo(own_redis, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("redis_repo"), "redis", own_redis.url)


@pytest.fixture(scope="session")
def sqlite_repo(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("sqlite_repo"), "sqlite", "redis://127.0.0.1:1/0")
