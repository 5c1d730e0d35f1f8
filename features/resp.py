"""A minimal pipelining Redis client for one job: send pre-packed commands, get N replies back.

One connection carries every batch: requests are written as they come and replies are matched
to them in order (Redis answers in order), parsed by hiredis in ``data_received`` with no
stream or pool layers in between. ``send`` hands the replies to a callback, so a read costs no
task, coroutine or intermediate future; ``request`` wraps it in a future for callers that await.

Deadlines: connecting (with AUTH/SELECT/TLS from the URL) is bounded by ``timeout_s``, and so is
every request, by one watchdog timer per connection that is armed for the oldest request in
flight (not one timer per request). A request past its deadline aborts the connection: every
request on it fails with ``RespTimeout`` and the next one reconnects, so a stalled server costs
each batch in flight at most one deadline. Before it aborts, the watchdog lets the loop poll for
I/O once more (``_GRACE_S``): under uvloop, timers run before I/O in each loop iteration, so after
a stall (a slow callback, the process descheduled) a reply that arrived in time would otherwise
be thrown away with the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

__all__ = ["RedisTarget", "RespConnection", "RespClient", "RespError", "RespTimeout", "OnReply", "future_callback"]

# Called exactly once per request: (replies, None) or (None, the error). It must not raise.
OnReply = Callable[[list | None, BaseException | None], None]

# How long an overdue request waits for one more I/O poll before its connection is aborted: long
# enough that the re-armed watchdog cannot run in the same timer phase (libuv runs timers that
# come due while it runs them), short next to any deadline.
_GRACE_S = 0.001


class RespError(Exception):
    """Redis answered with an error reply, or the connection failed or closed."""


class RespTimeout(RespError):
    """No reply (or no connection) within the deadline."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis listens: ``host:port`` over TCP (TLS for ``rediss://``), or a unix socket
    (``path``, from ``unix:///path/to/redis.sock?db=N``, redis-py's form) for a Redis on the same
    machine (a sidecar, a local replica): the gateway's CPU per request 5-8 % lower than over
    loopback TCP here (BENCHMARKS.md)."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    path: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "RedisTarget":
        u = urlsplit(url)
        user = unquote(u.username) if u.username else None
        password = unquote(u.password) if u.password else None
        if u.scheme == "unix":
            if not u.path or u.path == "/":
                raise ValueError(f"a unix:// Redis URL names its socket: unix:///path/to/redis.sock, not {url!r}")
            dbs = parse_qs(u.query).get("db", ["0"])
            if len(dbs) != 1 or not dbs[0].isdigit():
                raise ValueError(f"db in {url!r} is not one number")
            return cls("", 0, int(dbs[0]), user, password, False, unquote(u.path))
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis://, rediss:// or unix:// URL: {url!r}")
        db = (u.path or "/").strip("/") or "0"
        return cls(u.hostname or "127.0.0.1", u.port or 6379, int(db), user, password, u.scheme == "rediss")

    @property
    def where(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"

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


def _deliver(on_reply: OnReply, replies: list | None, exc: BaseException | None) -> None:
    try:
        on_reply(replies, exc)
    except Exception as err:  # a broken callback must not break the stream for the others
        asyncio.get_running_loop().call_exception_handler(
            {"message": "RESP reply callback raised", "exception": err})


def future_callback(fut: asyncio.Future) -> OnReply:
    """A callback that settles ``fut`` with the result or the error (unless it is already done)."""
    def on_reply(replies: list | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(replies)
    return on_reply


class RespConnection(asyncio.Protocol):
    """One pipelined connection; ``send`` calls back with ``n`` replies, ``request`` returns a future."""

    __slots__ = ("_timeout", "_loop", "_transport", "_reader", "_pending", "_lost", "_watchdog", "_overdue")

    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        # (callback, replies expected, replies so far, deadline on the loop's clock), oldest first
        self._pending: deque[tuple[OnReply, int, list, float]] = deque()
        self._lost: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._overdue: tuple | None = None  # the pending entry given its one extra poll

    @property
    def usable(self) -> bool:
        return self._transport is not None and self._lost is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def send(self, payload: bytes, n: int, on_reply: OnReply, deadline: float | None = None) -> None:
        """Write ``payload`` (``n`` commands); ``on_reply`` gets their replies or the failure.

        ``deadline`` (the loop's clock) defaults to now + the timeout; a request that waited for
        the connection passes the one it started with.
        """
        transport, loop = self._transport, self._loop
        if transport is None or loop is None or self._lost is not None:
            _deliver(on_reply, None, RespError(f"connection closed: {self._lost!r}"))
            return
        if deadline is None:
            deadline = loop.time() + self._timeout
        elif loop.time() >= deadline:
            _deliver(on_reply, None, RespTimeout(f"no reply from Redis within {self._timeout}s (connecting)"))
            return
        self._pending.append((on_reply, n, [], deadline))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
        try:
            transport.write(payload)
        except Exception as exc:  # closing under us: fail this and everything pending with it
            self.abort(RespError(f"write to Redis failed: {exc!r}"))

    def request(self, payload: bytes, n: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.send(payload, n, future_callback(fut))
        return fut

    def _check_deadline(self) -> None:
        """The watchdog: abort if the oldest request is past its deadline, else re-arm for it."""
        self._watchdog = None
        if not self._pending or self._lost is not None or self._loop is None:
            return
        oldest = self._pending[0]
        if self._loop.time() < oldest[3]:
            self._watchdog = self._loop.call_at(oldest[3], self._check_deadline)
        elif oldest is not self._overdue:  # its reply may be in the socket buffer, unread: poll once more
            self._overdue = oldest
            self._watchdog = self._loop.call_later(_GRACE_S, self._check_deadline)
        else:
            self.abort(RespTimeout(f"no reply from Redis within {self._timeout}s"))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while pending:
            reply = reader.gets()
            if reply is False:
                return
            on_reply, n, acc, _ = pending[0]
            acc.append(reply)
            if len(acc) == n:
                pending.popleft()
                _deliver(on_reply, acc, None)
        if reader.gets() is not False:  # a reply nobody asked for: the stream is out of step
            self.abort(RespError("unexpected reply from Redis"))

    def connection_lost(self, exc: Exception | None) -> None:
        lost = self._lost = self._lost or exc or RespError("connection closed by Redis")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        err = lost if isinstance(lost, RespError) else RespError(f"connection lost: {lost!r}")
        while self._pending:
            on_reply, _, _, _ = self._pending.popleft()
            _deliver(on_reply, None, err)

    def abort(self, why: BaseException) -> None:
        if self._lost is None:
            self._lost = why
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what is still pending


class RespClient:
    """Owns one RespConnection to ``target``, (re)connecting on demand.

    ``timeout_s`` bounds each request from the moment it is sent, a (re)connect it waits for
    included, and the connect itself (with its handshake).
    """

    __slots__ = ("_target", "_timeout", "_conn", "_connecting")

    def __init__(self, target: RedisTarget, timeout_s: float) -> None:
        self._target = target
        self._timeout = timeout_s
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Future | None = None

    async def _connect(self) -> RespConnection:
        t = self._target
        ctx = ssl.create_default_context() if t.tls else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                if t.path is not None:
                    _, conn = await loop.create_unix_connection(lambda: RespConnection(self._timeout), t.path)
                else:
                    _, conn = await loop.create_connection(lambda: RespConnection(self._timeout), t.host, t.port,
                                                           ssl=ctx)
                hello, n = t.handshake()
                if n:
                    for reply in await conn.request(hello, n):
                        if isinstance(reply, hiredis.ReplyError):
                            conn.abort(RespError(str(reply)))
                            raise RespError(f"Redis refused the handshake: {reply}")
        except TimeoutError:
            raise RespTimeout(f"no connection to Redis within {self._timeout}s") from None
        except OSError as exc:
            raise RespError(f"cannot connect to Redis at {t.where}: {exc}") from exc
        return conn

    def send(self, payload: bytes, n: int, on_reply: OnReply) -> None:
        """Write ``payload`` on the live connection, or once a (re)connect succeeds."""
        conn = self._conn
        if conn is not None and conn.usable:
            conn.send(payload, n, on_reply)
            return
        connecting = self._connecting
        if connecting is None:  # one connect at a time; concurrent batches share it
            connecting = self._connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(self._connected)
        deadline = asyncio.get_running_loop().time() + self._timeout  # the connect counts against it

        def after_connect(fut: asyncio.Future) -> None:
            if fut.cancelled():
                _deliver(on_reply, None, RespError("connect cancelled"))
            elif (exc := fut.exception()) is not None:
                _deliver(on_reply, None, exc)
            else:
                fut.result().send(payload, n, on_reply, deadline)

        connecting.add_done_callback(after_connect)

    def _connected(self, fut: asyncio.Future) -> None:
        self._connecting = None
        if not fut.cancelled() and fut.exception() is None:
            self._conn = fut.result()

    async def request(self, payload: bytes, n: int) -> list:
        """Send ``payload`` holding ``n`` commands; return their ``n`` replies (errors as ReplyError)."""
        fut = asyncio.get_running_loop().create_future()
        self.send(payload, n, future_callback(fut))
        return await fut

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.abort(RespError("client closed"))
            self._conn = None

    def __repr__(self) -> str:
        state = "up" if self._conn is not None and self._conn.usable else "down"
        return f"<RespClient {self._target.where}/{self._target.db} {state}>"
