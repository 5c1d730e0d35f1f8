"""Transport-free plumbing for the hot routes, and its ASGI side.

The inference handler (`Gateway.handle_infer`) reads the headers it needs (`Headers`), reads
the body through a callable the front gives it, and returns a finished `Reply`; the front
sends it. `gateway.http1` is the served front (on the event loop); the ASGI side below serves the same
handler to in-process clients (httpx's ASGI transport in tests) and to the Starlette routes.
Starlette's Request/Response layers cost 20–40 % of the gateway's CPU under load (measured
here), so the inference routes never go through them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from gateway.errors import GatewayError, PayloadTooLarge
from httpcommon.errors import render

Scope = dict[str, Any]
# (status, body, content type, extra headers): what every front sends for an inference route.
Reply = tuple[int, bytes, bytes, "list[tuple[bytes, bytes]] | None"]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
OCTETS = b"application/octet-stream"


class ClientGone(Exception):
    """The client disconnected before its body arrived; there is no one to answer."""


class Headers:
    """The request headers the hot path reads, picked out in one pass over the list."""

    __slots__ = ("content_length", "content_type", "content_encoding", "header_length",
                 "unit_id", "timeout_ms", "override", "authorization", "priority")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.content_length = self.content_type = self.content_encoding = None
        self.header_length = self.unit_id = self.timeout_ms = None
        self.override = self.authorization = self.priority = None
        for name, value in raw:
            slot = _WANTED.get(name)
            if slot is not None:
                setattr(self, slot, value)


_WANTED = {
    b"content-length": "content_length", b"content-type": "content_type",
    b"content-encoding": "content_encoding", b"inference-header-content-length": "header_length",
    b"x-unit-id": "unit_id", b"x-request-timeout-ms": "timeout_ms",
    b"x-variant-override": "override", b"authorization": "authorization",
    b"x-priority": "priority",
}


async def read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"body exceeds {limit} bytes")
        except ValueError:
            pass  # the server already validated framing; count bytes below instead
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds {limit} bytes")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def error_reply(err: GatewayError, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    """Rendered by `httpcommon.errors.render`, like every other error of the gateway."""
    status, body, headers = render(err.code, err.message)
    return status, body, JSON, [*(extra or ()), *headers]


async def send_reply(send: Send, reply: Reply) -> None:
    status, body, content_type, extra = reply
    await send_bytes(send, status, body, content_type, extra)


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes = JSON,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: GatewayError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Rendered by `httpcommon.errors.render`, like every other error of the gateway."""
    status, body, headers = render(err.code, err.message)
    await send_bytes(send, status, body, JSON, [*(extra or ()), *headers])
