"""The served HTTP/1.1 front: an asyncio protocol on the event loop's own thread, with httptools
(llhttp, the parser under uvicorn and Node.js) reading the requests and uvloop doing the I/O.

Why not a server on threads of its own (granian, until 2026-12-07): every request then crossed
threads four times (hand-over, body, body back, answer), each crossing waking a thread and
taking the GIL; measured side by side on the full path (BENCHMARKS.md, "The HTTP front on the
loop"), serving on the loop cost 29-35 % less CPU per request and gave 31-45 % more
throughput at c=16-256. Here a request costs no thread switch: uvloop reads the socket, the
parser calls back into this module, and the reply is written by the loop (at once, when the
socket takes it).

The inference routes go straight to `Gateway.handle_infer` as soon as the head is parsed
(headers picked from the parsed list; the body through a future the parser completes, done
already when it came in the same read; the reply written in one call); everything else (health,
metadata, metrics, admin, console, OpenAPI, extensions) goes through a small bridge to the
Starlette apps, which serves what they send, streamed or not.

What the front guarantees, whatever the client does:

* **Bounded memory per connection.** A body over `limit` is refused with 413 (a declared one
  before it is read; a chunked one as soon as it passes the limit) and the connection closed;
  request heads over `max_head_bytes` get 400 and a close. One request is served at a time per
  connection; pipelined requests wait in order, and the socket stops being read while
  `max_pipelined` wait or while the client is not reading its answers (`pause_writing`).
* **Deadlines.** A request must arrive whole within `read_timeout_s` of its first byte (slow
  heads and bodies: the connection is closed), an idle keep-alive connection is closed after
  `keepalive_s`. One sweep a second checks every connection, so nothing is timed per request.
* **Clear errors.** Unparsable HTTP gets a 400 JSON error and a close; an upgrade (websocket,
  h2c) is not taken: the request is answered over HTTP/1.1 and the connection closed; an
  unexpected exception gets a 500, logged once with its traceback.

**Shedding at hand-over.** When the gateway is already at its adaptive limit, a plain
refusal (an inference route, no `x-request-timeout-ms` to validate, a well-formed or absent
`x-priority`, a caller that honours Retry-After) is answered from the parser's callback with
the pre-built 429, before any task is made for it; anything else goes to the handler, which
decides as before. Requests handed over and not started yet count against the limit, so a
burst that the loop has not reached is refused instead of queued.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import deque
from typing import Any, Callable
from urllib.parse import unquote

import httptools

from gateway import errors as E
from gateway.admission import PRIORITIES, parse_priority
from gateway.app import hot_route, method_not_allowed
from gateway.asgi import ClientGone, Headers, Reply, error_reply

log = logging.getLogger("infergate.http")

__all__ = ["HTTPFront", "HTTPConnection"]

_REASONS = {100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
            301: "Moved Permanently", 302: "Found", 304: "Not Modified", 307: "Temporary Redirect",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
            413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
            428: "Precondition Required", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_STATUS = {s: b"HTTP/1.1 %d %s\r\n" % (s, r.encode()) for s, r in _REASONS.items()}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY = frozenset({204, 304})


def _status_line(status: int) -> bytes:
    return _STATUS.get(status) or b"HTTP/1.1 %d Status\r\n" % status


class _Stop(Exception):
    """Raised from a parser callback once the connection is answered and closing."""


class HTTPFront:
    """A protocol factory for `loop.create_server`, and what its connections share.

    `gateway` answers the inference routes (None on the admin listener), `asgi` everything
    else. `start()` listens; `shutdown()` stops accepting, lets the requests in flight finish
    (each answer then closes its connection) and closes the rest."""

    def __init__(self, asgi: Any, gateway: Any | None = None, *, limit: int = 16 * 1024 * 1024,
                 unexpected: Any | None = None, shed: bool = True, read_timeout_s: float = 30.0,
                 keepalive_s: float = 60.0, max_head_bytes: int = 64 * 1024, max_pipelined: int = 8) -> None:
        self.asgi, self.gw, self.limit, self.unexpected = asgi, gateway, limit, unexpected
        self.read_timeout_s, self.keepalive_s = read_timeout_s, keepalive_s
        self.max_head_bytes, self.max_pipelined = max_head_bytes, max_pipelined
        self.conns: set[HTTPConnection] = set()
        self.closing = False
        self.tick = 0            # seconds since start, advanced by the sweep (no clock per request)
        self.date = _date_header()
        self.front_shed = 0      # 429s answered at hand-over (tests read it)
        # Inference requests handed to a task and not started yet: the loop's queue of new
        # requests (`infergate_admission_front_queue`).
        self.handed = 0
        self.started = 0
        self.refusal: Callable[[str | None, Headers, str], Reply | None] | None = None
        self._shed = shed and gateway is not None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None

    def __call__(self) -> "HTTPConnection":
        return HTTPConnection(self)

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> None:
        """Listen (raises OSError when the port is taken) and start the once-a-second sweep."""
        loop = asyncio.get_running_loop()
        if self._shed and self.refusal is None:   # the gateway's admission exists once it has started
            self.refusal = self._make_refusal(self.gw)
        self._server = await loop.create_server(self, host, port, backlog=backlog, reuse_port=reuse_port or None)
        self._sweeper = asyncio.ensure_future(self._sweep())

    @property
    def busy(self) -> int:
        """Connections with a request being served or waiting."""
        return sum(1 for c in self.conns if c.busy)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting; answer what is in flight within `timeout_s`; close every connection."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for c in list(self.conns):
            if not c.busy and not c.reading:
                c.close()
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.conns):
            c.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tick += 1
            self.date = _date_header()
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the sweep must go on
                log.exception("the HTTP front's connection sweep failed")

    def sweep(self) -> int:
        """Close connections past their deadlines (`tick` is in seconds); returns how many."""
        now, closed = self.tick, 0
        read, idle = self.read_timeout_s, self.keepalive_s
        for c in list(self.conns):
            if c.reading:
                if now - c.since < read:
                    continue
                log.info("closing %s: request not received within %.0f s", c.client, read)
            elif c.busy or now - c.since < idle:
                continue
            c.close()
            closed += 1
        return closed

    # -- shedding at hand-over -----------------------------------------------------------------
    def _make_refusal(self, gw: Any) -> Callable[[str | None, Headers, str], Reply | None]:
        """The at-the-limit refusal: the pre-built 429 for a plain request, else None."""
        adm = gw.admission
        lim, components = adm.limiter, gw.components
        m = components.metrics
        shed = [m.counter(m.admission_shed.labels("limit", p)) for p in PRIORITIES]
        overloaded = m.counter(m.rejected.labels("overloaded"))
        on_front = m.counter(m.admission_front_shed)
        m.track(m.admission_front_queue, lambda: self.handed - self.started)
        reply = adm.overloaded_reply
        by_model, default = adm.by_model, adm.default_priority

        def refusal(model: str | None, h: Headers, client: str) -> Reply | None:
            if lim.in_flight + self.handed - self.started < lim.limit or not components.ready:
                return None
            if h.timeout_ms is not None:
                return None             # validated, and its deadline applied, by the handler
            if h.priority is None:
                priority = by_model.get(model, default) if model is not None else default
            else:
                priority, bad = parse_priority(h.priority, default)
                if bad:
                    return None         # counted as malformed by the handler
            if adm.penalty_s > 0 and adm.ignored_retry_after(client):
                return None             # a retry storm: the handler holds this 429 back
            shed[priority].inc()
            overloaded.inc()
            on_front.inc()
            self.front_shed += 1
            return reply

        return refusal


def _route(url: bytes) -> tuple[str, bool, str | None]:
    """A request target's path (query string dropped), whether it is an inference route, and
    the model of a v2 one."""
    path = url.decode("latin-1")
    if "?" in path:
        path = path.partition("?")[0]
    return (path, *hot_route(path))


def _date_header() -> bytes:
    return b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"


class HTTPConnection(asyncio.Protocol):
    """One client connection: parse, serve one request at a time, answer in order.

    An inference request is handed to its handler as soon as its head is parsed (admission
    decides before the body is read, as the contract says; a refusal is answered then and its
    body read and dropped); the handler awaits the body through a future that the parser
    completes (already done when the body came in the same read, the usual case). Other
    requests, and requests pipelined behind one being served, are served once whole."""

    __slots__ = ("front", "parser", "transport", "client", "url", "headers", "body", "size", "head_bytes",
                 "declared", "expect", "body_fut", "skip", "busy", "reading", "last", "since", "pending",
                 "closed", "paused", "lost", "_resume")

    def __init__(self, front: HTTPFront) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.client = ""
        self.pending: deque[tuple] = deque()
        self.busy = False        # a request is being served (others may wait in `pending`)
        self.reading = False     # a request has begun and not fully arrived
        self.since = front.tick  # when the current wait began (the sweep's seconds)
        self.closed = False
        self.last = False        # nothing more is read: close once the answers owed are written
        self.paused = False      # the transport's buffer is full: the client does not read
        self.lost: asyncio.Future | None = None
        self._resume: asyncio.Future | None = None
        self.body_fut: asyncio.Future | None = None   # the body a running handler waits for
        self.skip = False        # the request being read was answered already: drop its body
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = self.head_bytes = 0
        self.declared: bytes | None = None
        self.expect = False

    def __repr__(self) -> str:
        return f"<HTTPConnection {self.client} busy={self.busy} pending={len(self.pending)}>"

    # -- asyncio -------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        self.front.conns.add(self)
        if self.front.closing:
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.front.conns.discard(self)
        for fut in (self.lost, self._resume):
            if fut is not None and not fut.done():
                fut.set_result(None)
        fut = self.body_fut
        if fut is not None and not fut.done():   # the client left before its body was whole
            self.body_fut = None
            fut.set_exception(ClientGone())

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.last:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade (websocket, h2c) is not taken: the request is answered over HTTP/1.1
            # (it was parsed whole) and the connection closed, since what follows it would be
            # the other protocol.
            self._last()
        except httptools.HttpParserError as exc:
            if not self.closed and not isinstance(exc.__context__, _Stop):
                try:
                    self._refuse(E.BadRequest(f"malformed HTTP request: {exc}"))
                except _Stop:
                    pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _last(self) -> None:
        """Read nothing more; close once what is owed is answered."""
        self.last = True
        if not self.closed:
            self.transport.pause_reading()
            if not self.busy and not self.pending:
                self.close()

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.size = self.head_bytes = 0
        self.declared = None
        self.expect = False
        self.reading = True
        self.since = self.front.tick

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.front.max_head_bytes:
            self._refuse(E.BadRequest(f"request head over {self.front.max_head_bytes} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        if name == b"content-length":
            self.declared = value
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > self.front.max_head_bytes:
            self._refuse(E.BadRequest(f"request head over {self.front.max_head_bytes} bytes"))

    def on_headers_complete(self) -> None:
        front = self.front
        declared = self.declared
        if declared is not None and declared.isdigit() and int(declared) > front.limit:
            # refused before the body is read; the unread body makes the connection unusable
            self._refuse(E.PayloadTooLarge(f"body exceeds {front.limit} bytes"))
        if self.busy:
            return              # served once whole, in its turn
        p = self.parser
        if front.gw is not None and p.get_method() == b"POST":
            _, hot, model = _route(self.url)
            if hot:
                if self._infer(Headers(self.headers), None, model, p.should_keep_alive()):
                    self.skip = True    # answered now; its body is read and dropped
                return
        if self.expect:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.skip:
            return
        self.size += len(body)
        if self.size > self.front.limit:
            self._refuse(E.PayloadTooLarge(f"body exceeds {self.front.limit} bytes"))
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.reading = False
        if self.skip:
            self.skip = False
            return
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        fut = self.body_fut
        if fut is not None:     # its handler is running and waits for it
            self.body_fut = None
            if not fut.done():
                fut.set_result(data)
            return
        req = (self.parser.get_method(), self.url, self.headers, data, self.parser.should_keep_alive())
        if self.busy:
            self.pending.append(req)
            if len(self.pending) >= self.front.max_pipelined:
                self.transport.pause_reading()
            return
        self._dispatch(req)

    # -- serving -------------------------------------------------------------------------------
    def _refuse(self, err: E.GatewayError) -> None:
        """An unreadable request: answered in its turn, then the connection closes. Raised
        from a parser callback, `_Stop` ends the parsing."""
        if self.closed:
            raise _Stop()
        fut = self.body_fut
        if fut is not None and not fut.done():  # its handler answers it (413, 400)
            self.body_fut = None
            fut.set_exception(err)
        elif self.busy:
            self.pending.append((None, error_reply(err), None, b"", False))
        else:
            self._send(error_reply(err), False)
        self._last()
        raise _Stop()

    def _dispatch(self, req: tuple) -> None:
        """Start serving a whole request (nothing else is being served on this connection)."""
        method, url = req[0], req[1]
        if method == b"POST" and self.front.gw is not None:
            _, hot, model = _route(url)
            if hot:
                if self._infer(Headers(req[2]), req[3], model, req[4]):
                    self._next()
                return
        self.busy = True
        asyncio.get_running_loop().create_task(self._serve(req))

    def _infer(self, h: Headers, body: bytes | None, model: str | None, keep: bool) -> bool:
        """An inference request: refused at the limit (True: answered already), else handed
        to its handler's task with its body (None: still arriving, through `body_fut`)."""
        front = self.front
        if front.refusal is not None:
            reply = front.refusal(model, h, self.client)
            if reply is not None:
                self._send(reply, keep)
                return True
        loop = asyncio.get_running_loop()
        if body is None:
            if self.expect:
                self.transport.write(_CONTINUE)
            self.body_fut = loop.create_future()
        front.handed += 1
        self.busy = True
        loop.create_task(self._serve_infer(h, body if body is not None else self.body_fut, model, keep))
        return False

    def _next(self) -> None:
        """The current request is answered: serve the next one waiting, if any."""
        self.busy = False
        self.since = self.front.tick
        if self.closed:
            return
        if not self.pending:
            if self.last:
                self.close()
            return
        if len(self.pending) == self.front.max_pipelined and not self.last:
            self.transport.resume_reading()
        self._dispatch(self.pending.popleft())

    async def _serve_infer(self, h: Headers, body: bytes | asyncio.Future, model: str | None, keep: bool) -> None:
        front = self.front
        front.started += 1
        try:
            read = body if body.__class__ is bytes else (lambda: body)
            reply = await front.gw.handle_infer(h, read, self.client, model)
        except Exception as exc:  # noqa: BLE001 - handle_infer answers its own errors; a defect here
            reply = self._unexpected(exc, "POST", "/v1/infer" if model is None else f"/v2/models/{model}/infer")
        if reply is not None:
            self._send(reply, keep)
        if self.paused and not self.closed:
            await self._writable()
        self._next()

    async def _serve(self, req: tuple) -> None:
        method, url, headers, body, keep = req
        try:
            if method is None:              # a refusal queued behind earlier requests
                self._send(url, False)
                return
            if self.front.gw is not None:
                path, hot, _ = _route(url)
                if hot:                     # an inference route, not POST
                    self._send(method_not_allowed(path), keep, method == b"HEAD")
                    return
            await self._bridge(method, url, headers, body, keep)
            if self.paused and not self.closed:
                await self._writable()
        finally:
            self._next()

    async def _writable(self) -> None:
        """Wait until the client reads its answers (or leaves)."""
        self._resume = asyncio.get_running_loop().create_future()
        try:
            await self._resume
        finally:
            self._resume = None

    def _unexpected(self, exc: BaseException, method: str, path: Any) -> Reply:
        u = self.front.unexpected
        if u is None or not u.reported(exc):
            log.exception("unexpected error on %s %s", method, path)
        return error_reply(E.Internal(exc))

    def _keeps(self, keep: bool) -> bool:
        """Whether the connection stays open after this answer (`keep`: the client's wish)."""
        return keep and not self.front.closing and not (self.last and not self.pending)

    def _send(self, reply: Reply, keep: bool, head_only: bool = False) -> None:
        """Write a finished reply (and close the connection when it is the last); `head_only`
        (the answer to a HEAD): its head alone, with the length the body would have."""
        if self.closed:
            return
        status, body, content_type, extra = reply
        keep = self._keeps(keep)
        head = _status_line(status) + b"content-type: " + content_type + b"\r\ncontent-length: %d\r\n" % len(body)
        if extra:
            head += b"".join(k + b": " + v + b"\r\n" for k, v in extra)
        head += self.front.date
        if not keep:
            head += b"connection: close\r\n"
        if head_only:
            self.transport.write(head + b"\r\n")
        elif len(body) < 65536:
            self.transport.write(head + b"\r\n" + body)
        else:
            self.transport.writelines((head, b"\r\n", body))
        if not keep:
            self.close()

    async def _bridge(self, method: bytes, url: bytes, headers: list, body: bytes, keep: bool) -> None:
        """Serve one request with the ASGI app (not on the hot path)."""
        raw_path, _, query = url.partition(b"?")
        host, _, port = self.client.rpartition(":")
        sock = self.transport.get_extra_info("sockname") or ("", 0)
        asgi_scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1" if self.parser.get_http_version() == "1.1" else "1.0",
            "method": method.decode("latin-1"), "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path, "query_string": query,
            "root_path": "", "headers": headers,
            "client": (host.strip("[]"), int(port or 0)), "server": (sock[0], sock[1]),
        }
        head_only = method == b"HEAD"
        state = {"body": False, "status": 0, "headers": [], "chunked": False, "ended": False}

        async def receive() -> dict[str, Any]:
            if not state["body"]:
                state["body"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            if self.lost is None:
                self.lost = asyncio.get_running_loop().create_future()
                if self.closed:
                    self.lost.set_result(None)
            await self.lost
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            kind = msg["type"]
            if kind == "http.response.start":
                state["status"] = msg["status"]
                state["headers"] = list(msg.get("headers", ()))
                return
            if kind != "http.response.body" or state["ended"] or self.closed:
                return
            chunk, more = msg.get("body", b""), msg.get("more_body", False)
            status = state["status"]
            if not state["chunked"]:
                hdrs = state["headers"]
                length = any(k.lower() == b"content-length" for k, _ in hdrs)
                streamed = more and not length
                out = [_status_line(status),
                       *(k + b": " + v + b"\r\n" for k, v in hdrs if k.lower() not in (b"connection", b"date")),
                       self.front.date]
                if streamed and not head_only and status not in _NO_BODY:
                    out.append(b"transfer-encoding: chunked\r\n")
                elif not length and status not in _NO_BODY:
                    out.append(b"content-length: %d\r\n" % (0 if head_only else len(chunk)))
                last = not self._keeps(keep)
                if last:
                    out.append(b"connection: close\r\n")
                out.append(b"\r\n")
                state["chunked"] = True
                state["stream"] = streamed
                state["last"] = last
                if not streamed and not head_only and status not in _NO_BODY:
                    out.append(chunk)       # head and body in one write
                    chunk = b""
                self.transport.write(b"".join(out))
            if not head_only and status not in _NO_BODY and chunk:
                self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if state["stream"] else chunk)
            if not more:
                state["ended"] = True
                if state["stream"] and not head_only:
                    self.transport.write(b"0\r\n\r\n")
                if state["last"]:
                    self.close()

        try:
            await self.front.asgi(asgi_scope, receive, send)
        except E.PayloadTooLarge as err:
            if not state["chunked"]:
                self._send(error_reply(err), keep)
        except Exception as exc:  # noqa: BLE001
            if not state["chunked"]:
                self._send(self._unexpected(exc, method.decode("latin-1"), raw_path), keep)
            else:
                self._unexpected(exc, method.decode("latin-1"), raw_path)
                self.close()
            return
        if not state["ended"] and not self.closed:
            if state["chunked"]:
                self.close()    # the app stopped mid-answer: the client must not wait for the rest
            else:
                self._send(self._unexpected(RuntimeError("the app sent no answer"),
                                            method.decode("latin-1"), raw_path), keep)


