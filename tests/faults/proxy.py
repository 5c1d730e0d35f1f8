"""A TCP fault proxy in front of a real server (Triton's gRPC port, a Redis), after asyncpg's
``_testbase.fuzzer.TCPFuzzingProxy``.

``FaultProxy`` runs the proxy in a child process of its own (this file, run as a script), so
the latency of what it forwards never depends on the test process: a load generator busy in
the test's loop holds that process's GIL, and a proxy thread beside it waited for the GIL on
every step (a circuit's recovery probe, through a new connection, then took longer than the
gateway's 250 ms read deadline). Modes are switched from any thread over a pipe; a switch has
taken effect when the call returns. ``ThreadProxy`` is the proxy itself (its own event loop in
a daemon thread), what the child runs.

Modes:

* ``pass_through()``  forward bytes both ways.
* ``latency(s)``      deliver every chunk ``s`` seconds after it was read, in order, both ways
                      (one-way delay per chunk; throughput is not throttled).
* ``reset()``         RST every open connection (SO_LINGER 0) and every new one at accept.
* ``blackhole()``     keep every connection open, read and drop everything, answer nothing;
                      new connections are accepted but never connected upstream.
* ``refuse()``        close the listener (new connects get ECONNREFUSED) and RST open ones.

Leaving ``blackhole`` RSTs the black-holed connections, which is what a peer that comes
back does when the client's retransmits reach it; leaving ``refuse`` listens again on the
same port. A failed upstream connect RSTs the client, as a dead server's host would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

PASS, LATENCY, RESET, BLACKHOLE, REFUSE = "pass", "latency", "reset", "blackhole", "refuse"
_CHUNK = 65536


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST rather than FIN."""
    if writer is None:
        return
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    transport.abort()


class _Conn:
    __slots__ = ("client", "upstream", "tasks", "blackholed", "alive")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.alive = 2  # pumps running
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.blackholed = False

    def rst(self) -> None:
        _rst(self.client)
        _rst(self.upstream)
        for t in self.tasks:
            t.cancel()


class _Endpoint:
    """What both proxies share: the target, the listening port and its URLs, a context manager."""

    def __init__(self, target: tuple[str, int] | str, port: int = 0, name: str = "proxy") -> None:
        if isinstance(target, str):
            host, _, p = target.rpartition(":")
            target = (host or "127.0.0.1", int(p))
        self.target = target
        self.name = name
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThreadProxy(_Endpoint):
    """The proxy in a daemon thread of this process: ``ThreadProxy(("127.0.0.1", 6379)).start()``."""

    def __init__(self, target: tuple[str, int] | str, port: int = 0, name: str = "proxy") -> None:
        super().__init__(target, port, name)
        self.mode = PASS
        self.delay_s = 0.0
        self.stats: dict[str, int] = {"accepted": 0, "reset": 0, "blackholed": 0,
                                      "upstream_failed": 0, "bytes_up": 0, "bytes_down": 0}
        self._conns: set[_Conn] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        extra = f" {self.delay_s * 1e3:.0f} ms" if self.mode == LATENCY else ""
        return (f"<{type(self).__name__} {self.name} :{self.port} -> {self.target[0]}:{self.target[1]} "
                f"[{self.mode}{extra} | open {len(self._conns)}]>")

    # -- lifecycle (any thread) -------------------------------------------------------------

    def start(self) -> "ThreadProxy":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fault-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    # -- modes (any thread) ------------------------------------------------------------------

    def pass_through(self) -> None:
        self._call(self._set(PASS))

    def latency(self, seconds: float) -> None:
        self._call(self._set(LATENCY, seconds))

    def reset(self) -> None:
        self._call(self._set(RESET))

    def blackhole(self) -> None:
        self._call(self._set(BLACKHOLE))

    def refuse(self) -> None:
        self._call(self._set(REFUSE))

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "proxy not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- inside the proxy's loop -------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            c.rst()
        self._conns.clear()
        for _ in range(3):  # let the cancelled pumps finish before the loop stops
            await asyncio.sleep(0)

    async def _set(self, mode: str, delay: float = 0.0) -> None:
        old, self.mode, self.delay_s = self.mode, mode, delay
        if mode in (RESET, REFUSE):
            if mode == REFUSE and self._server is not None:
                self._server.close()
                self._server = None
            for c in list(self._conns):
                self.stats["reset"] += 1
                c.rst()
            self._conns.clear()
        elif mode == BLACKHOLE:
            for c in self._conns:
                c.blackholed = True
        if old == BLACKHOLE and mode != BLACKHOLE:
            for c in [c for c in self._conns if c.blackholed]:
                self.stats["reset"] += 1
                c.rst()
                self._conns.discard(c)
        if mode != REFUSE and self._server is None:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        if self.mode in (RESET, REFUSE):
            self.stats["reset"] += 1
            _rst(writer)
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        if self.mode == BLACKHOLE:
            conn.blackholed = True
            self.stats["blackholed"] += 1
            conn.tasks.append(asyncio.ensure_future(self._drain_forever(reader, conn)))
            return
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(*self.target), 2.0)
        except (OSError, asyncio.TimeoutError):
            self.stats["upstream_failed"] += 1
            self._conns.discard(conn)
            _rst(writer)
            return
        if conn not in self._conns:  # reset while connecting
            _rst(uw)
            return
        conn.upstream = uw
        conn.tasks.append(asyncio.ensure_future(self._pump(reader, uw, conn, "bytes_up")))
        conn.tasks.append(asyncio.ensure_future(self._pump(ur, writer, conn, "bytes_down")))

    async def _drain_forever(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        try:
            while await reader.read(_CHUNK):
                pass
        except (OSError, asyncio.CancelledError):
            pass
        self._conns.discard(conn)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn,
                    counter: str) -> None:
        """Read from one side, deliver to the other by the mode in force when each chunk was read."""
        due: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(due, dst))
        conn.tasks.append(deliver)
        try:
            while data := await src.read(_CHUNK):
                if conn.blackholed:
                    continue
                self.stats[counter] += len(data)
                delay = self.delay_s if self.mode == LATENCY else 0.0
                due.put_nowait((time.monotonic() + delay, data))
        except OSError:
            pass
        finally:
            # EOF or error: close the other side once what was read has been delivered.
            due.put_nowait((time.monotonic(), None))
            conn.alive -= 1
            if conn.alive <= 0:
                self._conns.discard(conn)

    @staticmethod
    async def _deliver(due: asyncio.Queue[tuple[float, bytes | None]], dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                at, data = await due.get()
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if not dst.transport.is_closing():
                        dst.close()
                    return
                dst.write(data)
                await dst.drain()
        except OSError:
            _rst(dst)


class FaultProxy(_Endpoint):
    """``FaultProxy(("127.0.0.1", 6379)).start()``: a ``ThreadProxy`` in a child process, same
    modes; ``.address`` is "127.0.0.1:PORT", ``.stats`` the child's counters."""

    def __init__(self, target: tuple[str, int] | str, port: int = 0, name: str = "proxy") -> None:
        super().__init__(target, port, name)
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> "FaultProxy":
        self._proc = subprocess.Popen(
            [sys.executable, __file__, self.target[0], str(self.target[1]), str(self.port), self.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.port = self._ask({"op": "state"})["port"]
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # the child stops its proxy and exits at EOF
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None, "proxy not started"
            proc.stdin.write(json.dumps(cmd) + "\n")
            line = proc.stdout.readline()  # the child answers every line, once the mode is in force
        if not line:
            raise RuntimeError(f"fault proxy {self.name!r} exited (rc {proc.poll()})")
        return json.loads(line)

    @property
    def stats(self) -> dict[str, int]:
        return self._ask({"op": "state"})["stats"]

    @property
    def mode(self) -> str:
        return self._ask({"op": "state"})["mode"]

    def pass_through(self) -> None:
        self._ask({"op": "set", "mode": PASS})

    def latency(self, seconds: float) -> None:
        self._ask({"op": "set", "mode": LATENCY, "delay": seconds})

    def reset(self) -> None:
        self._ask({"op": "set", "mode": RESET})

    def blackhole(self) -> None:
        self._ask({"op": "set", "mode": BLACKHOLE})

    def refuse(self) -> None:
        self._ask({"op": "set", "mode": REFUSE})

    def __repr__(self) -> str:
        if self._proc is None:
            return f"<FaultProxy {self.name} :{self.port} -> {self.target[0]}:{self.target[1]} [stopped]>"
        return self._ask({"op": "state"})["repr"].replace("<ThreadProxy", "<FaultProxy", 1)


def _serve(host: str, port: int, listen: int, name: str) -> None:
    """The child: one ThreadProxy, driven by JSON lines on stdin, one JSON answer per line."""
    proxy = ThreadProxy((host, port), port=listen, name=name).start()
    setters = {PASS: proxy.pass_through, RESET: proxy.reset, BLACKHOLE: proxy.blackhole, REFUSE: proxy.refuse}
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "set":
                if cmd["mode"] == LATENCY:
                    proxy.latency(cmd["delay"])
                else:
                    setters[cmd["mode"]]()
            out = {"port": proxy.port, "mode": proxy.mode, "stats": proxy.stats, "repr": repr(proxy)}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        proxy.stop()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
