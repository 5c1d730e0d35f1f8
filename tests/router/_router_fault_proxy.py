"""A TCP proxy in front of the real Redis that can drop every connection on demand."""

from __future__ import annotations

import asyncio


class FaultProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 6379) -> None:
        self._up = (upstream_host, upstream_port)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.down = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.down:
            w.close()
            return
        ur, uw = await asyncio.open_connection(*self._up)
        self._writers |= {w, uw}
        for coro in (self._pipe(r, uw), self._pipe(ur, w)):
            t = asyncio.create_task(coro)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until ``restore()``."""
        self.down = True
        for w in self._writers:
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
