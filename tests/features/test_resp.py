"""The minimal pipelining client against real redis-servers: handshake, ordering, errors, reconnect."""

from __future__ import annotations

import asyncio
import socket
import time

import hiredis
import pytest
import redis
import uvloop

from redis_proc import RedisProcess
from features.resp import RedisTarget, RespClient, RespError, RespTimeout


def cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_target_from_url():
    t = RedisTarget.from_url("rediss://bob:p%40ss@example.org:6380/4")
    assert (t.host, t.port, t.db, t.username, t.password, t.tls) == ("example.org", 6380, 4, "bob", "p@ss", True)
    assert RedisTarget.from_url("redis://localhost").port == 6379
    assert t.handshake()[1] == 2
    with pytest.raises(ValueError):
        RedisTarget.from_url("http://x")
    u = RedisTarget.from_url("unix://:pw@/run/redis/redis.sock?db=2")
    assert (u.path, u.db, u.password, u.tls, u.where) == ("/run/redis/redis.sock", 2, "pw", False, "unix:/run/redis/redis.sock")
    assert RedisTarget.from_url("unix:///tmp/r.sock").db == 0
    for bad in ("unix://", "unix:///tmp/r.sock?db=x", "unix:///tmp/r.sock?db=1&db=2"):
        with pytest.raises(ValueError):
            RedisTarget.from_url(bad)


async def test_unix_socket(own_redis, tmp_path):
    """The same server over its unix socket; a socket nobody listens on is a clear RespError."""
    sync = redis.Redis(port=own_redis.port, db=5)
    sync.set(b"resp:unix", b"u")
    client = RespClient(RedisTarget.from_url(own_redis.unix_url.replace("db=0", "db=5")), 0.5)
    try:
        assert await client.request(cmd(b"GET", b"resp:unix"), 1) == [b"u"]
        assert "unix:" in repr(client) and "up" in repr(client)
    finally:
        await client.aclose()
        sync.delete(b"resp:unix")
        sync.close()
    nobody = RespClient(RedisTarget.from_url(f"unix://{tmp_path}/none.sock"), 0.5)
    with pytest.raises(RespError, match="cannot connect to Redis at unix:"):
        await nobody.request(cmd(b"PING"), 1)
    await nobody.aclose()


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


async def test_watchdog_times_out_each_request_at_its_own_deadline():
    proc = RedisProcess().start()
    client = RespClient(RedisTarget.from_url(proc.url), 0.3)
    loop = asyncio.get_running_loop()
    try:
        assert await client.request(cmd(b"PING"), 1) == [b"PONG"]  # arms the watchdog for this request
        await asyncio.sleep(0.2)  # the watchdog is still armed for that (answered) request's deadline
        proc.pause()
        t0 = loop.time()
        with pytest.raises(RespTimeout, match="within 0.3s"):
            await client.request(cmd(b"PING"), 1)
        waited = loop.time() - t0
        assert 0.28 <= waited < 0.6, waited  # re-armed for this request, not fired at the old deadline
        proc.resume()
        assert await client.request(cmd(b"PING"), 1) == [b"PONG"]  # a fresh connection
    finally:
        proc.resume()
        await client.aclose()
        proc.stop()


async def test_refused_connect_and_silent_server_are_told_apart():

    with socket.socket() as listener:  # accepts nothing: connects hang in the backlog or time out
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        refused = RespClient(RedisTarget.from_url(f"redis://127.0.0.1:{port}/0"), 0.3)
        with pytest.raises(RespError, match="cannot connect") as info:
            await refused.request(cmd(b"PING"), 1)  # bound but not listening: refused at once
        assert not isinstance(info.value, RespTimeout)
        listener.listen(0)
        hung = RespClient(RedisTarget.from_url(f"redis://127.0.0.1:{port}/0"), 0.3)
        with pytest.raises(RespTimeout):
            await hung.request(cmd(b"PING"), 1)  # connected, but nobody ever answers
        await hung.aclose()


async def test_cancelled_request_keeps_the_stream_in_step(own_redis):
    sync = redis.Redis(port=own_redis.port)
    sync.set(b"resp:c", b"c")
    client = RespClient(RedisTarget.from_url(own_redis.url), 0.5)
    try:
        assert await client.request(cmd(b"PING"), 1) == [b"PONG"]
        slow = asyncio.ensure_future(client.request(cmd(b"GET", b"resp:c"), 1))
        await asyncio.sleep(0)
        slow.cancel()
        # the cancelled request's reply is still read off the stream and dropped, not handed on
        assert await client.request(cmd(b"ECHO", b"mine"), 1) == [b"mine"]
        assert await client.request(cmd(b"GET", b"resp:c"), 1) == [b"c"]
    finally:
        await client.aclose()
        sync.delete(b"resp:c")
        sync.close()


async def test_a_raising_callback_does_not_break_the_connection(own_redis):
    client = RespClient(RedisTarget.from_url(own_redis.url), 0.5)
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        await client.request(cmd(b"PING"), 1)

        def broken(replies, exc):
            raise ValueError("bug in a caller")

        client.send(cmd(b"PING"), 1, broken)
        assert await client.request(cmd(b"ECHO", b"after"), 1) == [b"after"]
        assert len(seen) == 1 and isinstance(seen[0]["exception"], ValueError)
    finally:
        loop.set_exception_handler(None)
        await client.aclose()


async def test_a_request_waiting_for_a_slow_connect_keeps_its_own_deadline(own_redis):
    from faults.proxy import FaultProxy

    with FaultProxy(("127.0.0.1", own_redis.port)) as proxy:
        proxy.latency(0.2)  # each way: SELECT answers after ~0.4 s, then PING would take ~0.4 s more
        client = RespClient(RedisTarget.from_url(proxy.url(path="/1")), 0.6)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            with pytest.raises(RespTimeout):
                await client.request(cmd(b"PING"), 1)
            waited = loop.time() - t0
            assert waited < 0.95, waited  # one deadline (0.6 s) from the request, not the connect's plus its own
            proxy.pass_through()
            assert await client.request(cmd(b"PING"), 1) == [b"PONG"]
        finally:
            await client.aclose()


@pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
def test_a_reply_that_arrived_during_a_stall_is_not_timed_out(own_redis, new_loop):
    """uvloop runs due timers before it polls for I/O: after a stall in an I/O callback the
    watchdog comes due while the reply already sits in the socket buffer, unread."""

    async def scenario() -> tuple[list | None, BaseException | None]:
        loop = asyncio.get_running_loop()
        client = RespClient(RedisTarget.from_url(own_redis.url), 0.05)
        outcome: asyncio.Future = loop.create_future()

        class Stall(asyncio.Protocol):  # some other connection's callback hogs the loop
            def data_received(self, data: bytes) -> None:
                client.send(cmd(b"PING"), 1, lambda replies, exc: outcome.set_result((replies, exc)))
                time.sleep(0.15)  # three deadlines; Redis answers meanwhile

        near, far = socket.socketpair()
        try:
            assert await client.request(cmd(b"PING"), 1) == [b"PONG"]
            transport, _ = await loop.create_connection(Stall, sock=near)
            far.send(b"go")
            result = await asyncio.wait_for(outcome, 2)
            transport.close()
            return result
        finally:
            far.close()
            await client.aclose()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        replies, exc = runner.run(scenario())
    assert exc is None and replies == [b"PONG"], exc
