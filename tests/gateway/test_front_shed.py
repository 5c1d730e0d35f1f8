"""Shedding on the HTTP front's thread (gateway/rsgi.py `RSGIFront.shedding`) and the
Retry-After penalty (gateway/admission.py), driven with stand-ins for
granian's watcher: which requests are answered there, with what, and what is counted. The
live behaviour (a real granian, 512 connections, a probe timing the 429s) is in
tests/faults/test_overload.py, which also checks that the hook is in effect."""

from __future__ import annotations

import sys
import time
from typing import Iterator
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from gateway.admission import CRITICAL, SHEDDABLE, Admission, Limiter
from gateway.metrics import GatewayMetrics
from gateway.rsgi import RSGIFront, install_front_shedding


class Headers(dict):
    """granian's header map: `get` by lower-case name."""


class Proto:
    def __init__(self) -> None:
        self.sent: list[tuple[int, list[tuple[str, str]], bytes]] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, headers, body))


class Watcher:
    def __init__(self, path: str = "/v1/infer", method: str = "POST", client: str = "10.0.0.1:5000",
                 **headers: str) -> None:
        self.scope = SimpleNamespace(proto="http", method=method, path=path, client=client,
                                     headers=Headers({k.replace("_", "-"): v for k, v in headers.items()}))
        self.proto = Proto()
        self.finished = 0

    def done(self) -> None:
        self.finished += 1


def make(limit: int = 4, by_model: dict[str, int] | None = None, penalty_s: float = 0.5, switch_ms: float = 0.0,
         storm_ms: float = 0.0):
    reg = CollectorRegistry()
    m = GatewayMetrics(reg)
    lim = Limiter(initial=limit, min_limit=limit, max_limit=limit)
    adm = Admission(lim, CRITICAL, by_model or {}, m, penalty_s)
    gw = SimpleNamespace(admission=adm, components=SimpleNamespace(ready=True, metrics=m),
                         config=SimpleNamespace(admission_shed_switch_ms=switch_ms,
                                                admission_storm_switch_ms=storm_ms))
    front = RSGIFront(None, gw)
    handed: list[Watcher] = []
    return front, front.shedding(handed.append), lim, handed, reg


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def fill(lim: Limiter, n: int) -> None:
    for _ in range(n):
        lim.admit(CRITICAL, 1.0)


def test_below_the_limit_every_request_goes_to_the_loop() -> None:
    front, schedule, lim, handed, reg = make(limit=4)
    fill(lim, 2)
    w = Watcher()
    schedule(w)
    assert handed == [w] and not w.proto.sent and front.handed == 1
    assert value(reg, "infergate_admission_front_shed_total") == 0


def test_at_the_limit_a_plain_request_is_refused_on_the_front() -> None:
    front, schedule, lim, handed, reg = make(limit=4)
    fill(lim, 4)
    w = Watcher()
    schedule(w)
    assert handed == [] and w.finished == 1
    (status, headers, body), = w.proto.sent
    assert status == 429 and ("retry-after", "1") in headers and ("content-type", "application/json") in headers
    assert b'"overloaded"' in body
    assert value(reg, "infergate_admission_front_shed_total") == 1
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="critical") == 1
    assert value(reg, "infergate_rejected_total", reason="overloaded") == 1
    assert front.front_shed == 1 and front.handed == 0


def test_requests_handed_over_and_not_started_count_against_the_limit() -> None:
    """A burst the loop has not reached yet: the limit counts it, so the rest of the burst is
    refused at the front instead of queueing behind it."""
    front, schedule, lim, handed, _ = make(limit=4)
    ws = [Watcher(client=f"10.0.0.1:{5000 + i}") for i in range(10)]
    for w in ws:
        schedule(w)
    assert handed == ws[:4] and all(w.proto.sent for w in ws[4:])
    front.started += 4          # the loop ran them: its handlers admitted them
    fill(lim, 4)
    lim.done(0.0, False)        # one answered: room for one more
    w = Watcher(client="10.0.0.2:1")
    schedule(w)
    assert handed[-1] is w


@pytest.mark.parametrize("watcher", [
    Watcher(path="/metrics", method="GET"),                 # not an inference route
    Watcher(path="/v2/models/clf/ready", method="GET"),
    Watcher(method="GET"),                                  # 405 is the loop's answer
    Watcher(x_request_timeout_ms="abc"),                    # validated on the loop (400)
    Watcher(x_request_timeout_ms="50"),                     # its deadline is the loop's to apply
    Watcher(x_priority="urgent"),                           # malformed: counted on the loop
], ids=["metrics", "v2-ready", "get", "bad-timeout", "timeout", "bad-priority"])
def test_what_the_front_leaves_to_the_loop(watcher: Watcher) -> None:
    _, schedule, lim, handed, reg = make(limit=2)
    fill(lim, 2)
    schedule(watcher)
    assert handed == [watcher] and not watcher.proto.sent
    assert value(reg, "infergate_admission_front_shed_total") == 0


def test_not_ready_is_left_to_the_loop() -> None:
    front, schedule, lim, handed, _ = make(limit=2)
    front._gw.components.ready = False
    fill(lim, 2)
    w = Watcher()
    schedule(w)
    assert handed == [w]


def test_priority_from_the_header_or_the_model_labels_the_refusal() -> None:
    _, schedule, lim, _, reg = make(limit=2, by_model={"clf": SHEDDABLE})
    fill(lim, 2)
    schedule(Watcher(x_priority="Sheddable"))
    schedule(Watcher(path="/v2/models/clf/infer", client="10.0.0.3:1"))
    schedule(Watcher(path="/v2/models/other/infer", client="10.0.0.4:1"))
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="sheddable") == 2
    assert value(reg, "infergate_admission_shed_total", reason="limit", priority="critical") == 1


def test_a_connection_resending_early_goes_to_the_loop_for_its_penalty() -> None:
    _, schedule, lim, handed, reg = make(limit=2)
    fill(lim, 2)
    ws = [Watcher(client="10.0.0.9:7") for _ in range(3)]
    for w in ws:
        schedule(w)
    # 1st: refused here; 2nd and 3rd: sooner than Retry-After -> the loop holds their 429s
    assert [bool(w.proto.sent) for w in ws] == [True, False, False]
    assert handed == ws[1:]
    assert value(reg, "infergate_admission_front_shed_total") == 1


def test_a_failing_shortcut_still_hands_the_request_over(caplog: pytest.LogCaptureFixture) -> None:
    _, schedule, lim, handed, _ = make(limit=1)
    fill(lim, 1)
    w = Watcher()
    w.scope.headers = None      # a scope the shortcut cannot read
    schedule(w)
    assert handed == [w]
    assert "shedding on the HTTP front's thread failed" in caplog.text


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """time.monotonic() reads the list's one value; Python's switch interval is put back after."""
    normal = sys.getswitchinterval()
    now = [500.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    try:
        yield now
    finally:
        sys.setswitchinterval(normal)


def test_shedding_shortens_the_switch_interval_until_a_second_without_refusals(clock: list[float]) -> None:
    now, normal = clock, sys.getswitchinterval()
    front, schedule, lim, handed, reg = make(limit=1, switch_ms=0.02, storm_ms=0.5)
    fill(lim, 1)
    schedule(Watcher(client="a:1"))
    # shedding starts with the storm's interval, until a calm second has been seen
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert value(reg, "infergate_admission_switch_interval_seconds") == pytest.approx(0.0005)
    now[0] += 1.0
    schedule(Watcher(client="a:4"))             # the second before was calm: the short one
    assert sys.getswitchinterval() == pytest.approx(0.00002)
    assert value(reg, "infergate_admission_switch_interval_seconds") == pytest.approx(0.00002)
    lim.done(0.0, False)
    now[0] += 0.5
    schedule(Watcher(client="a:2"))             # handed over, but shed 0.5 s ago
    assert sys.getswitchinterval() == pytest.approx(0.00002)
    front.started += 1
    now[0] += 1.1
    schedule(Watcher(client="a:3"))
    assert sys.getswitchinterval() == pytest.approx(normal) and len(handed) == 2
    assert value(reg, "infergate_admission_switch_interval_seconds") == pytest.approx(normal)


def test_a_retry_storm_gets_the_longer_switch_interval_and_well_behaved_callers_the_short_one(
        clock: list[float]) -> None:
    """Once a second the front judges the second before: over a tenth of the callers refused at
    the limit resent before their Retry-After (the loop holds those) means a storm; the short
    interval only after a calm second."""
    now, normal = clock, sys.getswitchinterval()
    front, schedule, lim, handed, _ = make(limit=1, switch_ms=0.02, storm_ms=0.5)
    fill(lim, 1)
    # second 1: 8 refused, and 2 of them come back 0.1 s later (storm callers: to the loop)
    for i in range(8):
        schedule(Watcher(client=f"s:{i}"))
    now[0] += 0.1
    schedule(Watcher(client="s:0"))
    schedule(Watcher(client="s:1"))
    assert [w.scope.client for w in handed] == ["s:0", "s:1"]
    assert sys.getswitchinterval() == pytest.approx(0.0005)    # not judged yet: starts as a storm
    # second 2 starts: 2 of 10 were a storm -> the storm's interval for this second
    now[0] += 1.0
    schedule(Watcher(client="t:0"))
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    # second 3: 1 storm caller of 11 (< a tenth counts as calm): the short one again
    for i in range(1, 10):
        schedule(Watcher(client=f"t:{i}"))
    now[0] += 0.2
    schedule(Watcher(client="t:0"))             # early: storm
    now[0] += 1.0
    schedule(Watcher(client="u:0"))
    assert sys.getswitchinterval() == pytest.approx(0.00002)
    # after a pause (over a second with no refusal) shedding starts as a storm again
    now[0] += 5.0
    schedule(Watcher(client="w:0"))
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    # a storm's interval of 0 leaves Python's own
    sys.setswitchinterval(normal)
    front, schedule, lim, handed, _ = make(limit=1, switch_ms=0.02, storm_ms=0.0)
    fill(lim, 1)
    now[0] += 10
    schedule(Watcher(client="v:0"))
    now[0] += 0.1
    schedule(Watcher(client="v:0"))
    now[0] += 1.0
    schedule(Watcher(client="v:1"))
    assert sys.getswitchinterval() == pytest.approx(normal)


def test_the_hook_is_in_this_granian() -> None:
    assert install_front_shedding() is True


def test_an_early_resend_is_penalised_and_an_honest_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    adm = make()[0]._gw.admission
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    seq = []
    for dt in (0.0, 0.1, 0.5, 1.2, 1.1):
        now[0] += dt
        seq.append(adm.ignored_retry_after("c:1"))
    # refused; early; early; honoured; honoured
    assert seq == [False, True, True, False, False]
    assert adm.ignored_retry_after("c:2") is False       # another connection has its own record
