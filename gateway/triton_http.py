"""Triton's inference call over its HTTP/REST port (KServe v2 with the binary tensor extension).

Only `ModelInfer` goes this way, and only when the replica's HTTP address is configured
(`triton_http_urls`); metadata, health and the repository stay on gRPC (`gateway.backend`).
Measured here (BENCHMARKS.md, "What the fourth sitting added"): one 10-row call costs the gateway's Python
thread ~52 µs instead of ~140 µs through grpc.aio, and Triton ~258 µs of CPU instead of ~375;
a sequential call takes 0.44 ms instead of 0.68.

Keep-alive connections, one call on a connection at a time (no pipelining), reused LIFO and
opened on demand; how many calls are in flight is the batcher's business (a handful per
replica). The body is the JSON header of the call, built per batch from a per-target
template, followed by each input's raw bytes (`Inference-Header-Content-Length`); the answer
is read the same way. Failures are raised as `grpc.aio.AioRpcError` with the status gRPC
would have given, so that the replica pool's retry, ejection and translation rules (and their
tests) hold for both transports: no connection or a dropped one is UNAVAILABLE, a call past
its deadline DEADLINE_EXCEEDED (its connection is closed: a late answer must not be read as
the next call's), Triton's 400 INVALID_ARGUMENT with its message, 404 NOT_FOUND, 503
UNAVAILABLE, anything else INTERNAL.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import grpc
import numpy as np
import orjson

from gateway.errors import InvalidField
from gateway.tensors import from_binary, to_binary

__all__ = ["HTTPInfer", "HTTPTemplate"]

_MAX_HEAD = 64 * 1024            # response head bytes before the blank line
_MAX_BODY = 64 * 1024 * 1024     # the gRPC channel's message limit, kept
_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
           503: grpc.StatusCode.UNAVAILABLE, 429: grpc.StatusCode.RESOURCE_EXHAUSTED}


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class HTTPTemplate:
    """What is constant about a target's HTTP call, built once; `build(inputs)` gives the bytes
    of one call, `decode(header_len, body)` its outputs by name."""

    __slots__ = ("_head", "_inputs", "_outputs")

    def __init__(self, model: str, version: str, inputs: tuple, outputs: tuple) -> None:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        # Triton ignores the Host header; HTTP/1.1 requires one.
        self._head = (f"POST {path} HTTP/1.1\r\nHost: triton\r\nContent-Type: application/octet-stream\r\n"
                      "Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n").encode()
        self._inputs = tuple((t.name, t.datatype) for t in inputs)
        # Every output, always, as raw bytes: a batch mixes requests that select different outputs.
        self._outputs = [{"name": t.name, "parameters": {"binary_data": True}} for t in outputs]

    def build(self, inputs: dict[str, np.ndarray]) -> bytes:
        raws, specs = [], []
        for name, datatype in self._inputs:
            x = inputs[name]
            raw = to_binary(x)
            raws.append(raw)
            specs.append({"name": name, "shape": x.shape, "datatype": datatype,
                          "parameters": {"binary_data_size": len(raw)}})
        header = orjson.dumps({"inputs": specs, "outputs": self._outputs})
        body_len = len(header) + sum(map(len, raws))
        return b"".join((self._head % (len(header), body_len), header, *raws))

    def decode(self, header_len: int, body: bytes) -> dict[str, np.ndarray]:
        """Each output's raw bytes as an array (`tensors.from_binary`, which checks the sizes);
        an answer that does not add up is Triton's fault: INTERNAL, never the caller's 400."""
        view = memoryview(body)
        try:
            doc = orjson.loads(view[:header_len])
            out: dict[str, np.ndarray] = {}
            at = header_len
            for t in doc["outputs"]:
                size = t["parameters"]["binary_data_size"]
                out[t["name"]] = from_binary(t["name"], t["datatype"], view[at:at + size], tuple(t["shape"]))
                at += size
        except (ValueError, KeyError, TypeError, InvalidField) as exc:
            raise rpc_error(grpc.StatusCode.INTERNAL, f"undecodable answer from Triton: {exc}") from exc
        return out


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `call` writes one request and resolves with (header length,
    body) of its answer."""

    __slots__ = ("transport", "_buf", "_need", "_head_len", "_status", "_ihcl", "_waiter", "lost", "fresh")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = -1
        self._head_len = self._status = self._ihcl = 0
        self._waiter: asyncio.Future | None = None
        self.lost = False
        self.fresh = True   # no byte of the current call's answer yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def call(self, payload: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self._waiter = fut = loop.create_future()
        self.fresh = True
        self.transport.write(payload)  # type: ignore[union-attr]
        return fut

    def data_received(self, data: bytes) -> None:
        self.fresh = False
        buf = self._buf
        buf += data
        if self._need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail("answer head too long")
                return
            try:
                self._parse_head(bytes(buf[:end]))
            except ValueError as exc:
                self._fail(f"bad answer head: {exc}")
                return
            self._head_len = end + 4
        if len(buf) < self._need:
            return
        body = bytes(buf[self._head_len:self._need])
        del buf[:self._need]
        self._need = -1
        if buf or self._waiter is None:   # bytes nobody asked for: the stream is out of step
            self._fail("unexpected bytes from Triton")
            return
        waiter, self._waiter = self._waiter, None
        if waiter.done():
            return
        if self._status == 200:
            waiter.set_result((self._ihcl, body))
            return
        try:
            details = orjson.loads(body).get("error", "")
        except (ValueError, AttributeError):
            details = body[:200].decode("utf-8", "replace")
        waiter.set_exception(rpc_error(_STATUS.get(self._status, grpc.StatusCode.INTERNAL),
                                       f"HTTP {self._status}: {details}"))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._status = int(lines[0].split(b" ", 2)[1])
        length, self._ihcl = -1, 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"inference-header-content-length":
                self._ihcl = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not expected from Triton")
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"content-length {length}")
        self._need = len(head) + 4 + length

    def _fail(self, why: str) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self._settle_lost(rpc_error(grpc.StatusCode.UNAVAILABLE, why))

    def _settle_lost(self, err: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._settle_lost(rpc_error(grpc.StatusCode.UNAVAILABLE, f"connection to Triton lost: {exc or 'closed'}"))


class HTTPInfer:
    """Keep-alive connections to one Triton HTTP endpoint (`host:port` or `http://host:port`)."""

    def __init__(self, url: str, max_idle: int = 16) -> None:
        u = urlsplit(url if "//" in url else f"http://{url}")
        if u.scheme != "http" or not u.hostname or not u.port:
            raise ValueError(f"a Triton HTTP address is host:port or http://host:port, not {url!r}")
        self.url, self.host, self.port = url, u.hostname, u.port
        self._idle: list[_Conn] = []
        self._max_idle = max_idle

    def __repr__(self) -> str:
        return f"<HTTPInfer {self.host}:{self.port} [idle {len(self._idle)}]>"

    async def infer(self, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """One call: (inference header length, body). Raises AioRpcError (see the module).

        A kept-alive connection the server closed while idle fails before any byte of the
        answer: the call is then sent once more on a new connection, within the same deadline."""
        loop = asyncio.get_running_loop()
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = self._take()
                if conn is not None:
                    try:
                        return self._release(conn, await conn.call(payload, loop))
                    except grpc.aio.AioRpcError:
                        if not (conn.lost and conn.fresh):
                            raise
                conn = None
                try:
                    _, conn = await loop.create_connection(_Conn, self.host, self.port)
                except OSError as exc:
                    raise rpc_error(grpc.StatusCode.UNAVAILABLE,
                                    f"cannot connect to Triton at {self.host}:{self.port}: {exc}") from exc
                return self._release(conn, await conn.call(payload, loop))
        except TimeoutError:
            if conn is not None:
                conn._fail("deadline")   # noqa: SLF001 - a late answer must not reach the next call
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except grpc.aio.AioRpcError:
            if conn is not None:   # Triton's own error answer leaves the connection usable
                self._release(conn, None)
            raise
        except BaseException:
            if conn is not None and not conn.lost:
                conn._fail("call abandoned")   # noqa: SLF001 - cancelled mid-call: the stream is unknown
            raise

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost:
                return conn
        return None

    def _release(self, conn: _Conn, result: tuple[int, bytes] | None) -> tuple[int, bytes] | None:
        if not conn.lost:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
        return result

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
