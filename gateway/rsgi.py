"""The served HTTP front: granian's RSGI interface (Rust HTTP/1.1, socket I/O on its own
thread), in front of the same handler the ASGI side calls.

The inference routes go straight to `Gateway.handle_infer` (headers picked from granian's
list, the body read in one call when its length is declared, the reply sent in one call);
everything else (health, metadata, metrics, admin, console, OpenAPI, extensions) goes through
a small RSGI → ASGI bridge to the Starlette apps, which serves what they send, streamed or not.

Measured here (BENCHMARKS.md, "HTTP front"): on the full path at c=64 the gateway's Python
thread spends ~a quarter of its time in uvicorn + httptools; granian parses and writes on its
own thread.

**Shedding on the front's thread.** Granian hands each request to the event loop from its own
thread (`call_soon_threadsafe`), so under overload a refusal used to wait for the loop's turn
behind every ready callback (15-60 ms p99 at 1,024-2,048 connections) and cost the loop a task.
When the gateway is already at its adaptive limit, `RSGIFront.shedding` answers the 429 on
granian's thread at the moment of hand-over instead, without the loop: one comparison per
request while under the limit. Only a plain refusal is answered there (an inference route, no
`x-request-timeout-ms` to validate, a well-formed or absent `x-priority`, a caller that honours
Retry-After); anything else goes to the loop, which decides as before. Requests handed to the
loop and not started yet count against the limit here, so a burst the loop has not reached is
refused instead of queued. While it sheds, Python's GIL switch interval is shortened
(`admission_shed_switch_ms`, 20 µs), since granian's thread needs the GIL for every request it
takes in; in a retry storm (over a tenth of the refused resent early), and in the first
second of shedding until a calm second has been seen, less so (`admission_storm_switch_ms`,
0.5 ms): the loop then takes in most requests, and frequent hand-offs cost it throughput.
The hook is granian's private scheduler factory (`granian._futures._cbsched_aioschedule`,
pinned granian 2.8.x): `install_front_shedding()` wraps it once, and each front arms it in
`__rsgi_init__`, which granian calls just before it builds that server's scheduler. Without
the hook (another granian) nothing is shed on the thread and the loop refuses as before.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

from gateway import errors as E
from gateway.admission import PRIORITIES, parse_priority
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


# Fronts waiting for granian to build their scheduler (see the module's doc).
_ARMED: list["RSGIFront"] = []
_INSTALLED: list[bool] = []


def install_front_shedding() -> bool:
    """Wrap granian's scheduler factory once so that an armed front sheds on granian's
    thread; False (and a warning) when this granian has no such factory."""
    if _INSTALLED:
        return _INSTALLED[0]
    try:
        from granian import _futures
        original = _futures._cbsched_aioschedule  # noqa: SLF001 - see the module's doc
    except (ImportError, AttributeError):
        log.warning("this granian has no scheduler hook: overload refusals are answered on the event loop")
        _INSTALLED.append(False)
        return False

    def schedule_factory(loop: Any, ctx: Any, cb: Any) -> Callable[[Any], None]:
        inner = original(loop, ctx, cb)
        front = _ARMED.pop() if _ARMED else None
        return front.shedding(inner) if front is not None else inner

    _futures._cbsched_aioschedule = schedule_factory  # noqa: SLF001
    _INSTALLED.append(True)
    return True


class RSGIFront:
    """An RSGI application: `gateway` answers the inference routes (None on the admin
    listener), `asgi` everything else."""

    def __init__(self, asgi: Any, gateway: Any | None = None, limit: int = 16 * 1024 * 1024,
                 unexpected: Any | None = None) -> None:
        self._asgi, self._gw, self._limit = asgi, gateway, limit
        self._unexpected = unexpected
        self.front_shed = 0   # 429s answered on granian's thread (tests read it)
        # Requests handed to the loop (written on granian's thread only) and started by it
        # (written on the loop only): their difference is the loop's queue of new requests
        # (`infergate_admission_front_queue`). Granian starts every task it hands over, a
        # client that resets its connection at once included (51,834 such, under a storm:
        # back to 0 after); tests/faults/test_overload.py checks it returns to 0.
        self.handed = 0
        self.started = 0

    def __rsgi_init__(self, loop: Any) -> None:
        """Granian calls this just before it builds this server's scheduler: arm the hook."""
        if self._gw is not None and _INSTALLED and _INSTALLED[0]:
            _ARMED.append(self)

    def shedding(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        """`inner` (granian's hand-over of a request to the loop) with the at-the-limit
        refusal in front of it. Runs on granian's thread, holding the GIL."""
        gw = self._gw
        adm = gw.admission
        lim, components = adm.limiter, gw.components
        m = components.metrics
        # Tallies of their own (this thread writes them; the loop writes its own).
        shed = [m.counter(m.admission_shed.labels("limit", p)) for p in PRIORITIES]
        overloaded = m.counter(m.rejected.labels("overloaded"))
        on_front = m.counter(m.admission_front_shed)
        m.track(m.admission_front_queue, lambda: self.handed - self.started)
        reply = adm.overloaded_reply
        by_model, default = adm.by_model, adm.default_priority
        cfg = gw.config
        normal_switch = sys.getswitchinterval()
        fast_switch = cfg.admission_shed_switch_ms / 1e3 if cfg.admission_shed_switch_ms > 0 else normal_switch
        storm_switch = cfg.admission_storm_switch_ms / 1e3 if cfg.admission_storm_switch_ms > 0 else normal_switch
        m.track(m.admission_switch_interval, sys.getswitchinterval)
        # The interval in force, the last refusal's time, and this second's tally of the
        # refusals made here and of the retry-storm callers seen at the limit. Shedding starts
        # as a storm would (the longer interval) until a calm second has been seen.
        sw = {"now": normal_switch, "last": 0.0, "until": 0.0, "shed": 0, "storm": 0, "stormy": True}

        def shedding_now(storm: bool) -> None:
            # Shedding: this thread waits for the GIL before each request it answers or hands
            # over; a shorter switch interval makes the loop's thread let go sooner. Once a
            # second: a retry storm when over a tenth of those refused resent early (the short
            # interval only after a calm second).
            now = time.monotonic()
            sw["last"] = now
            if now >= sw["until"]:
                # the second that just ended decides; after a pause, start as a storm again
                fresh = now - sw["until"] <= 1.0
                sw["stormy"] = not fresh or sw["storm"] * 10 > sw["shed"] + sw["storm"]
                sw["shed"] = sw["storm"] = 0
                sw["until"] = now + 1.0
            sw["storm" if storm else "shed"] += 1
            want = storm_switch if sw["stormy"] else fast_switch
            if want != sw["now"]:
                sw["now"] = want
                sys.setswitchinterval(want)

        def refuse(watcher: Any) -> bool:
            scope = watcher.scope
            if scope.proto != "http" or scope.method != "POST" or not components.ready:
                return False
            hot, model = hot_route(scope.path)
            if not hot:
                return False
            hdrs = scope.headers
            if hdrs.get("x-request-timeout-ms") is not None:
                return False            # validated, and its deadline applied, on the loop
            raw = hdrs.get("x-priority")
            if raw is None:
                priority = by_model.get(model, default) if model is not None else default
            else:
                priority, bad = parse_priority(raw.encode("latin-1"), default)
                if bad:
                    return False        # counted as malformed on the loop
            if adm.penalty_s > 0 and adm.ignored_retry_after(scope.client):
                shedding_now(True)
                return False            # a retry storm: the loop holds this 429 back
            shed[priority].inc()
            overloaded.inc()
            on_front.inc()
            self.front_shed += 1
            shedding_now(False)
            respond(watcher.proto, reply)
            watcher.done()
            return True

        def schedule(watcher: Any) -> None:
            # Requests handed to the loop and not started yet count against the limit too:
            # a burst that the loop has not reached is refused here instead of queueing there.
            if lim.in_flight + self.handed - self.started >= lim.limit:
                try:
                    if refuse(watcher):
                        return
                except Exception:  # noqa: BLE001 - never lose a request to the shortcut
                    log.exception("shedding on the HTTP front's thread failed; the loop answers")
            elif sw["now"] != normal_switch and time.monotonic() - sw["last"] > 1.0:
                sw["now"] = normal_switch       # a second without shedding: Python's own again
                sys.setswitchinterval(normal_switch)
            self.handed += 1
            inner(watcher)

        return schedule

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        self.started += 1
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
