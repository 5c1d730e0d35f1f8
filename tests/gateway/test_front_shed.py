"""Shedding at hand-over (gateway/http1.py `HTTPFront._make_refusal`) and the Retry-After
penalty (gateway/admission.py), driven through the front's real connection code with a
stand-in transport and handler: which requests are answered by the front as they are parsed,
with what, and what is counted. The live behaviour (a real gateway, 512 connections, a probe
timing the 429s) is in tests/faults/test_overload.py."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.admission import CRITICAL, SHEDDABLE, Admission, Limiter
from gateway.asgi import ClientGone
from gateway.http1 import HTTPConnection, HTTPFront
from gateway.metrics import GatewayMetrics


class Transport:
    """What the connection writes, and the peer it sees."""

    def __init__(self, client: tuple[str, int]) -> None:
        self.peer, self.out, self.closed = client, b"", False

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: object) -> None:
        self.out += b"".join(parts)  # type: ignore[arg-type]

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Handler:
    """The gateway's handler: records the requests handed to it, answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, object]] = []
        self.gone = 0

    async def handle_infer(self, h, read, client, model):  # type: ignore[no-untyped-def]
        self.calls.append((client, model))
        try:
            body = read if isinstance(read, bytes) else await read()
        except ClientGone:
            self.gone += 1
            return None
        assert body.startswith(b'{"model"')
        return 200, b"{}", b"application/json", None


def make(limit: int = 4, by_model: dict[str, int] | None = None, penalty_s: float = 0.5):
    reg = CollectorRegistry()
    m = GatewayMetrics(reg)
    lim = Limiter(initial=limit, min_limit=limit, max_limit=limit)
    adm = Admission(lim, CRITICAL, by_model or {}, m, penalty_s)
    handler = Handler()
    gw = SimpleNamespace(admission=adm, components=SimpleNamespace(ready=True, metrics=m),
                         handle_infer=handler.handle_infer)
    front = HTTPFront(None, gw)
    front.refusal = front._make_refusal(gw)  # noqa: SLF001 - what start() arms
    return front, lim, handler, reg


def connect(front: HTTPFront, client: str = "10.0.0.1:5000") -> tuple[HTTPConnection, Transport]:
    """A new connection from `client`, and its transport (what the front writes to it)."""
    host, _, port = client.rpartition(":")
    t = Transport((host, int(port)))
    conn = front()
    conn.connection_made(t)
    return conn, t


def request(front: HTTPFront, path: str = "/v1/infer", method: str = "POST", client: str = "10.0.0.1:5000",
            **headers: str) -> Transport:
    """One request on a new connection; returns its transport (what was written)."""
    conn, t = connect(front, client)
    body = b'{"model": "clf", "inputs": [0.1]}' if method == "POST" else b""
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    conn.data_received(f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{head}\r\n"
                       .encode() + body)
    return t


def refused(t: Transport) -> bool:
    return t.out.startswith(b"HTTP/1.1 429")


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def fill(lim: Limiter, n: int) -> None:
    for _ in range(n):
        lim.admit(CRITICAL, 1.0)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_below_the_limit_every_request_goes_to_the_handler() -> None:
    front, lim, handler, reg = make(limit=4)
    fill(lim, 2)
    t = request(front)
    assert front.handed == 1 and front.started == 0 and t.out == b""
    await settle()
    assert handler.calls == [("10.0.0.1:5000", None)] and front.started == 1
    assert t.out.startswith(b"HTTP/1.1 200")
    assert value(reg, "infergate_admission_front_shed_total") == 0


async def test_at_the_limit_a_plain_request_is_refused_as_it_is_parsed() -> None:
    front, lim, handler, reg = make(limit=4)
    fill(lim, 4)
    t = request(front)
    # answered from the parser's callback: no task, nothing handed over
    assert refused(t) and front.handed == 0
    head, _, body = t.out.partition(b"\r\n\r\n")
    assert b"retry-after: 1\r\n" in head and b"content-type: application/json\r\n" in head
    assert orjson.loads(body)["error"] == "overloaded"
    assert value(reg, "infergate_admission_front_shed_total") == 1
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="critical") == 1
    assert value(reg, "infergate_rejected_total", reason="overloaded") == 1
    assert front.front_shed == 1
    await settle()
    assert handler.calls == [] and not t.closed      # the connection stays open (keep-alive)


async def test_requests_handed_over_and_not_started_count_against_the_limit() -> None:
    """A burst the loop has not reached yet: the limit counts it, so the rest of the burst is
    refused at the front instead of queueing behind it."""
    front, lim, handler, _ = make(limit=4)
    ts = [request(front, client=f"10.0.0.1:{5000 + i}") for i in range(10)]
    assert [refused(t) for t in ts] == [False] * 4 + [True] * 6
    assert front.handed - front.started == 4
    await settle()              # the handlers ran (here they answer at once)
    assert len(handler.calls) == 4 and front.handed == front.started
    t = request(front, client="10.0.0.2:1")
    assert not refused(t)


@pytest.mark.parametrize("path,method,headers", [
    ("/metrics", "GET", {}),                                 # not an inference route
    ("/v2/models/clf/ready", "GET", {}),
    ("/v1/infer", "GET", {}),                                # 405 is the handler's answer
    ("/v1/infer", "POST", {"x_request_timeout_ms": "abc"}),  # validated by the handler (400)
    ("/v1/infer", "POST", {"x_request_timeout_ms": "50"}),   # its deadline is the handler's to apply
    ("/v1/infer", "POST", {"x_priority": "urgent"}),         # malformed: counted by the handler
], ids=["metrics", "v2-ready", "get", "bad-timeout", "timeout", "bad-priority"])
async def test_what_the_front_leaves_to_the_handler(path: str, method: str, headers: dict[str, str]) -> None:
    front, lim, handler, reg = make(limit=2)
    front.asgi = _asgi_404
    fill(lim, 2)
    t = request(front, path, method, **headers)
    await settle()
    assert not refused(t) and t.out.startswith(b"HTTP/1.1 ")
    assert value(reg, "infergate_admission_front_shed_total") == 0


async def _asgi_404(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"no"})


async def test_not_ready_is_left_to_the_handler() -> None:
    front, lim, handler, _ = make(limit=2)
    front.gw.components.ready = False
    fill(lim, 2)
    t = request(front)
    await settle()
    assert not refused(t) and len(handler.calls) == 1


async def test_priority_from_the_header_or_the_model_labels_the_refusal() -> None:
    front, lim, _, reg = make(limit=2, by_model={"clf": SHEDDABLE})
    fill(lim, 2)
    request(front, x_priority="Sheddable")
    request(front, "/v2/models/clf/infer", client="10.0.0.3:1")
    request(front, "/v2/models/other/infer", client="10.0.0.4:1")
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="sheddable") == 2
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="critical") == 1


async def test_a_connection_resending_early_goes_to_the_handler_for_its_penalty() -> None:
    front, lim, handler, reg = make(limit=2)
    fill(lim, 2)
    ts = [request(front, client="10.0.0.9:7") for _ in range(3)]
    # 1st: refused here; 2nd and 3rd: sooner than Retry-After -> the handler holds their 429s
    assert [refused(t) for t in ts] == [True, False, False]
    await settle()
    assert len(handler.calls) == 2
    assert value(reg, "infergate_admission_front_shed_total") == 1


async def test_pipelined_requests_are_refused_in_their_turn() -> None:
    """Three requests in one packet at the limit: the first is served, the two behind it are
    refused when their turn comes, in order, on the same connection."""
    front, lim, handler, _ = make(limit=1, penalty_s=0.0)
    conn, t = connect(front, "10.0.0.5:1")
    body = b'{"model": "clf", "inputs": [0.1]}'
    one = b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    conn.data_received(one * 3)
    assert t.out == b""                       # the first is the handler's, the others wait
    lim.admit(CRITICAL, 1.0)                  # meanwhile the gateway fills up
    await settle()
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", t.out)
    assert statuses == [b"200", b"429", b"429"] and len(handler.calls) == 1


async def test_a_refusal_is_answered_before_the_body_and_the_connection_goes_on() -> None:
    front, lim, handler, _ = make(limit=1, penalty_s=0.0)
    fill(lim, 1)
    conn, t = connect(front, "10.0.0.6:1")
    body = b'{"model": "clf", "inputs": [0.1]}'
    conn.data_received(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body))
    assert refused(t) and front.handed == 0            # the head was enough
    conn.data_received(body[:10])
    conn.data_received(body[10:])                       # read and dropped
    lim.done(0.0, False)                                # room again
    t.out = b""
    conn.data_received(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    await settle()
    assert t.out.startswith(b"HTTP/1.1 200") and len(handler.calls) == 1 and not t.closed


async def test_an_admitted_request_is_handed_over_before_its_body_arrives() -> None:
    """Admission decides on the head: the handler starts (and counts in flight) while the body
    is still on its way, and gets it when it is whole."""
    front, lim, handler, _ = make(limit=4)
    conn, t = connect(front, "10.0.0.7:1")
    body = b'{"model": "clf", "inputs": [0.1]}'
    conn.data_received(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:5])
    await settle()
    assert front.started == 1 and len(handler.calls) == 1 and t.out == b""   # waiting for its body
    conn.data_received(body[5:])
    await settle()
    assert t.out.startswith(b"HTTP/1.1 200")


async def test_a_client_leaving_before_its_body_ends_its_handler() -> None:
    front, lim, handler, _ = make(limit=4)
    conn, t = connect(front, "10.0.0.8:1")
    conn.data_received(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{")
    await settle()
    assert len(handler.calls) == 1
    conn.connection_lost(None)
    await settle()
    assert handler.gone == 1 and t.out == b"" and not conn.busy


def test_an_early_resend_is_penalised_and_an_honest_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    adm = make()[0].gw.admission
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    seq = []
    for dt in (0.0, 0.1, 0.5, 1.2, 1.1):
        now[0] += dt
        seq.append(adm.ignored_retry_after("c:1"))
    # refused; early; early; honoured; honoured
    assert seq == [False, True, True, False, False]
    assert adm.ignored_retry_after("c:2") is False       # another connection has its own record
