"""The served HTTP front: granian's RSGI interface (Rust HTTP/1.1, socket I/O on its own
thread), in front of the same handler the ASGI side calls.

The inference routes go straight to `Gateway.handle_infer` (headers picked from granian's
list, the body read in one call when its length is declared, the reply sent in one call);
everything else (health, metadata, metrics, admin, console, OpenAPI, extensions) goes through
a small RSGI → ASGI bridge to the Starlette apps, which serves what they send, streamed or not.

Measured here (BENCHMARKS.md, "HTTP front"): on the full path at c=64 the gateway's Python
thread spends ~a quarter of its time in uvicorn + httptools; granian parses and writes on its
own thread.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import errors as E
from gateway.app import hot_route, method_not_allowed
from gateway.asgi import JSON, OCTETS, ClientGone, Headers, Reply, error_reply

try:
    from granian.rsgi import ProtocolClosed
except ImportError:  # pragma: no cover - granian is a dependency; this keeps the module importable
    ProtocolClosed = RuntimeError  # type: ignore[misc,assignment]

log = logging.getLogger("infergate.rsgi")

_CONTENT_TYPES = {JSON: [("content-type", "application/json")],
                  OCTETS: [("content-type", "application/octet-stream")]}


def respond(proto: Any, reply: Reply) -> None:
    """Send a finished reply (granian computes content-length)."""
    status, body, content_type, extra = reply
    headers = _CONTENT_TYPES.get(content_type) or [("content-type", content_type.decode("latin-1"))]
    if extra:
        headers = [*headers, *((k.decode("latin-1"), v.decode("latin-1")) for k, v in extra)]
    try:
        proto.response_bytes(status, headers, body)
    except ProtocolClosed:  # the client has gone: no one to answer
        pass


async def read_body(proto: Any, limit: int, declared: bytes | None) -> bytes:
    """The whole body, never more than `limit` bytes held: a declared length over it is
    refused before reading; a body without one (chunked) is read chunk by chunk."""
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            n = -1
        if n > limit:
            raise E.PayloadTooLarge(f"body exceeds {limit} bytes")
        if n >= 0:
            try:
                return await proto()
            except ProtocolClosed as exc:
                raise ClientGone() from exc
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                raise E.PayloadTooLarge(f"body exceeds {limit} bytes")
            chunks.append(chunk)
    except ProtocolClosed as exc:
        raise ClientGone() from exc
    return b"".join(chunks)


class RSGIFront:
    """An RSGI application: `gateway` answers the inference routes (None on the admin
    listener), `asgi` everything else."""

    def __init__(self, asgi: Any, gateway: Any | None = None, limit: int = 16 * 1024 * 1024,
                 unexpected: Any | None = None) -> None:
        self._asgi, self._gw, self._limit = asgi, gateway, limit
        self._unexpected = unexpected

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":   # websockets are not served
            proto.close(403)
            return
        if self._gw is not None:
            hot, model = hot_route(scope.path)
            if hot:
                if scope.method != "POST":
                    return respond(proto, method_not_allowed(scope.path))
                h = Headers.from_str(scope.headers.items())
                reply = await self._gw.handle_infer(
                    h, lambda: read_body(proto, self._limit, h.content_length), scope.client, model)
                if reply is not None:
                    respond(proto, reply)
                return
        await self._bridge(scope, proto)

    async def _bridge(self, scope: Any, proto: Any) -> None:
        """Serve one request with the ASGI app."""
        host, _, port = scope.client.rpartition(":")
        shost, _, sport = scope.server.rpartition(":")
        path = scope.path
        asgi_scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version, "method": scope.method, "scheme": scope.scheme,
            "path": path, "raw_path": path.encode("utf-8"),
            "query_string": scope.query_string.encode("latin-1"), "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
            "client": (host.strip("[]"), int(port or 0)), "server": (shost.strip("[]"), int(sport or 0)),
        }
        sent = {"body": False}
        started: dict[str, Any] = {}
        stream: list[Any] = []

        async def receive() -> dict[str, Any]:
            if not sent["body"]:
                sent["body"] = True
                try:
                    declared = next((v for k, v in asgi_scope["headers"] if k == b"content-length"), None)
                    body = await read_body(proto, self._limit, declared)
                except ClientGone:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": body, "more_body": False}
            await proto.client_disconnect()
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            kind = msg["type"]
            if kind == "http.response.start":
                started["status"] = msg["status"]
                started["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in msg.get("headers", ())]
            elif kind == "http.response.body":
                body, more = msg.get("body", b""), msg.get("more_body", False)
                if not stream and not more:
                    proto.response_bytes(started["status"], started["headers"], body)
                    return
                if not stream:
                    stream.append(proto.response_stream(started["status"], started["headers"]))
                if body:
                    await stream[0].send_bytes(body)

        try:
            await self._asgi(asgi_scope, receive, send)
        except E.PayloadTooLarge as err:
            if "status" not in started:
                respond(proto, error_reply(err))
        except ProtocolClosed:
            pass
        except Exception as exc:
            if self._unexpected is None or not self._unexpected.reported(exc):
                log.exception("unexpected error on %s %s", scope.method, path)
            if "status" not in started:
                respond(proto, error_reply(E.Internal(exc)))
