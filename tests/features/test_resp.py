"""The minimal pipelining client against real redis-servers: handshake, ordering, errors, reconnect."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
import redis

from redis_proc import RedisProcess
from features.resp import RedisTarget, RespClient, RespError


def cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_target_from_url():
    t = RedisTarget.from_url("rediss://bob:p%40ss@example.org:6380/4")
    assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("example.org", 6380, 4, "bob", "p@ss", True)
    assert RedisTarget.from_url("redis://localhost").port == 6379
    assert t.handshake()[1] == 2
    with pytest.raises(ValueError):
        RedisTarget.from_url("http://x")


async def test_select_pipelining_and_error_replies(own_redis):
    sync = redis.Redis(port=own_redis.port, db=3)
    sync.set(b"resp:a", b"1")
    sync.set(b"resp:b", b"2")
    client = RespClient(RedisTarget.from_url(own_redis.url.replace("/0", "/3")), 0.5)
    try:
        a, b = await asyncio.gather(
            client.request(cmd(b"GET", b"resp:a") + cmd(b"GET", b"nope"), 2),
            client.request(cmd(b"GET", b"resp:b"), 1),
        )
        assert a == [b"1", None] and b == [b"2"]
        (err,) = await client.request(cmd(b"HMGET", b"resp:a", b"f"), 1)
        assert isinstance(err, hiredis.ReplyError) and "WRONGTYPE" in str(err)
        assert "up" in repr(client)
    finally:
        await client.aclose()
        sync.delete(b"resp:a", b"resp:b")
        sync.close()


async def test_reconnects_after_the_server_drops_it(own_redis):
    client = RespClient(RedisTarget.from_url(own_redis.url), 0.5)
    try:
        assert await client.request(cmd(b"PING"), 1) == [b"PONG"]
        redis.Redis(port=own_redis.port).execute_command("CLIENT", "KILL", "TYPE", "normal")
        for _ in range(50):
            try:
                assert await client.request(cmd(b"PING"), 1) == [b"PONG"]
                break
            except RespError:
                await asyncio.sleep(0.01)
        else:
            raise AssertionError("no reconnect")
    finally:
        await client.aclose()


async def test_auth_handshake():
    proc = RedisProcess(None, "--requirepass", "s3cret", password="s3cret").start()
    try:
        good = RespClient(RedisTarget.from_url(f"redis://:s3cret@127.0.0.1:{proc.port}/0"), 0.5)
        assert await good.request(cmd(b"PING"), 1) == [b"PONG"]
        await good.aclose()
        bad = RespClient(RedisTarget.from_url(f"redis://:wrong@127.0.0.1:{proc.port}/0"), 0.5)
        with pytest.raises(RespError, match="handshake"):
            await bad.request(cmd(b"PING"), 1)
        await bad.aclose()
    finally:
        proc.stop()
