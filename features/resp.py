"""A minimal pipelining Redis client for one job: send pre-packed commands, get N replies back.

One connection carries every batch: requests are written as they come and replies are matched
to them in order (Redis answers in order), parsed by hiredis in ``data_received`` with no
stream or pool layers in between. Connect (with AUTH/SELECT/TLS from the URL) happens on first
use and again after any failure; a caller's timeout or cancellation aborts the connection, so a
stalled server costs each waiting batch one deadline and the next batch reconnects.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import hiredis

__all__ = ["RedisTarget", "RespConnection", "RespClient", "RespError"]


class RespError(Exception):
    """Redis answered with an error reply, or the connection failed or closed."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> "RedisTarget":
        u = urlsplit(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
        db = (u.path or "/").strip("/") or "0"
        return cls(u.hostname or "127.0.0.1", u.port or 6379, int(db),
                   unquote(u.username) if u.username else None,
                   unquote(u.password) if u.password else None, u.scheme == "rediss")

    def handshake(self) -> tuple[bytes, int]:
        """RESP bytes for AUTH/SELECT and how many replies they produce."""
        cmds: list[list[bytes]] = []
        if self.password is not None:
            auth = [b"AUTH"] + ([self.username.encode()] if self.username else []) + [self.password.encode()]
            cmds.append(auth)
        if self.db:
            cmds.append([b"SELECT", str(self.db).encode()])
        out = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c) for c in cmds)
        return out, len(cmds)


class RespConnection(asyncio.Protocol):
    """One pipelined connection; ``request`` returns a future of ``n`` replies."""

    __slots__ = ("_transport", "_reader", "_pending", "_lost")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future, int, list]] = deque()
        self._lost: BaseException | None = None

    @property
    def usable(self) -> bool:
        return self._transport is not None and self._lost is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def request(self, payload: bytes, n: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        transport = self._transport
        if transport is None or self._lost is not None:
            fut.set_exception(RespError(f"connection closed: {self._lost!r}"))
            return fut
        self._pending.append((fut, n, []))
        transport.write(payload)
        return fut

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while pending:
            reply = reader.gets()
            if reply is False:
                return
            fut, n, acc = pending[0]
            acc.append(reply)
            if len(acc) == n:
                pending.popleft()
                if not fut.done():
                    fut.set_result(acc)
        if reader.gets() is not False:  # a reply nobody asked for: the stream is out of step
            self.abort(RespError("unexpected reply from Redis"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or RespError("connection closed by Redis")
        while self._pending:
            fut, _, _ = self._pending.popleft()
            if not fut.done():
                fut.set_exception(RespError(f"connection lost: {self._lost!r}"))

    def abort(self, why: BaseException) -> None:
        if self._lost is None:
            self._lost = why
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what is still pending


class RespClient:
    """Owns one RespConnection to ``target``, (re)connecting on demand."""

    __slots__ = ("_target", "_connect_timeout", "_conn", "_connecting")

    def __init__(self, target: RedisTarget, connect_timeout_s: float) -> None:
        self._target = target
        self._connect_timeout = connect_timeout_s
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Future | None = None

    async def _connect(self) -> RespConnection:
        t = self._target
        ctx = ssl.create_default_context() if t.tls else None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(RespConnection, t.host, t.port, ssl=ctx)
            hello, n = t.handshake()
            if n:
                for reply in await conn.request(hello, n):
                    if isinstance(reply, hiredis.ReplyError):
                        conn.abort(RespError(str(reply)))
                        raise RespError(f"Redis refused the handshake: {reply}")
        return conn

    async def _connection(self) -> RespConnection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._connecting is None:  # one connect at a time; concurrent batches share it
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        fresh: RespConnection = await asyncio.shield(self._connecting)
        self._conn = fresh
        return fresh

    def _connected(self, fut: asyncio.Future) -> None:
        self._connecting = None
        if not fut.cancelled() and fut.exception() is None:
            self._conn = fut.result()  # also when the caller that started it gave up

    async def request(self, payload: bytes, n: int) -> list:
        """Send ``payload`` holding ``n`` commands; return their ``n`` replies (errors as ReplyError)."""
        conn = await self._connection()
        try:
            return await conn.request(payload, n)
        except asyncio.CancelledError:  # the caller's deadline: do not trust this stream any more
            conn.abort(RespError("request cancelled or timed out"))
            raise

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.abort(RespError("client closed"))
            self._conn = None

    def __repr__(self) -> str:
        state = "up" if self._conn is not None and self._conn.usable else "down"
        return f"<RespClient {self._target.host}:{self._target.port}/{self._target.db} {state}>"
