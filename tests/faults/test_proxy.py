"""The fault proxy itself, against a real Redis: each mode does what the fault tests assume."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest
import redis

from faults.conftest import RedisServer
from faults.proxy import FaultProxy


@pytest.fixture
def proxy(fault_redis: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", fault_redis.port), name="self-test") as p:
        yield p


def _client(p: FaultProxy, timeout: float = 0.3) -> redis.Redis:
    return redis.Redis(port=p.port, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)


def test_modes(proxy: FaultProxy) -> None:
    c = _client(proxy)
    assert c.ping()

    proxy.latency(0.1)
    t = time.perf_counter()
    assert c.ping()
    assert 0.18 <= time.perf_counter() - t < 0.5    # 100 ms each way, once per chunk
    assert "latency 100 ms" in repr(proxy)

    proxy.reset()
    with pytest.raises(redis.ConnectionError):
        c.ping()                                    # the open connection was reset
    with pytest.raises(redis.ConnectionError):
        _client(proxy).ping()                       # and so is a new one, at accept

    proxy.blackhole()
    with pytest.raises(redis.TimeoutError):
        _client(proxy).ping()                       # accepted, never answered

    proxy.pass_through()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2.0) as held:
        held.sendall(b"PING\r\n")
        assert held.recv(100) == b"+PONG\r\n"
        proxy.blackhole()
        held.sendall(b"PING\r\n")
        t = time.perf_counter()
        proxy.pass_through()                        # lifting RSTs the black-holed connection
        with pytest.raises(ConnectionResetError):
            held.recv(100)
        assert time.perf_counter() - t < 1.0

    proxy.refuse()
    with pytest.raises(redis.ConnectionError, match="(?i)refused"):
        _client(proxy).ping()

    proxy.pass_through()                            # listens again, on the same port
    assert _client(proxy).ping()
    assert proxy.stats["reset"] >= 3 and proxy.stats["blackholed"] >= 1
