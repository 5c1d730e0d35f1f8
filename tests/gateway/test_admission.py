"""The adaptive limiter (`gateway/admission.py`), pure: driven by a fake clock and synthetic
round trips from a model of a micro-batching gateway (the round trip is the floor until ~12
requests share the loop, then grows with them). The live behaviour is in
tests/faults/test_admission_live.py.
"""

from __future__ import annotations

import math

import pytest

from gateway.admission import (ADMITTED, CRITICAL, DEADLINE_FLOOR, DEADLINE_QUEUE, LIMIT, SHEDDABLE, Limiter,
                               parse_priority)
from gateway.config import GatewayConfig

FLOOR_S = 0.0015
WINDOW_S = 0.1


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def rtt(k: int) -> float:
    """Round trip with k requests in flight: flat while batching absorbs them, then linear."""
    return FLOOR_S * max(1.0, k / 12)


def drive(lim: Limiter, clock: Clock, offered: int, windows: int, model=rtt) -> dict:
    """`offered` callers each send one request per window; returns what the last window saw."""
    seen = {"admitted": 0, "shed": 0, "limits": []}
    for _ in range(windows):
        start = clock.t
        admitted = sum(lim.admit(CRITICAL, 1.0) == ADMITTED for _ in range(offered))
        seen["admitted"], seen["shed"] = admitted, offered - admitted
        r = model(admitted)
        clock.t = start + WINDOW_S / 2
        for _ in range(admitted):
            lim.done(clock.t - r, True)
        clock.t = start + WINDOW_S
        lim.update(clock.t)
        seen["limits"].append(lim.limit)
    return seen


def make(**kw) -> tuple[Limiter, Clock]:
    clock = Clock()
    args = dict(initial=32, min_limit=8, max_limit=512, tolerance=4.0, window_s=WINDOW_S, clock=clock)
    args.update(kw)
    return Limiter(**args), clock


def test_learns_the_floor_under_light_load_and_leaves_an_unused_limit_alone() -> None:
    lim, clock = make()
    assert math.isinf(lim.floor_s)
    seen = drive(lim, clock, offered=12, windows=30)   # 12 of 32: less than half in use
    assert lim.floor_s == pytest.approx(FLOOR_S)
    assert lim.limit == 32 and seen["shed"] == 0
    assert "floor 1.50ms" in repr(lim)


def test_rises_while_latency_stays_near_the_floor() -> None:
    lim, clock = make()
    drive(lim, clock, offered=10, windows=5)
    seen = drive(lim, clock, offered=40, windows=20)   # rtt(40) = 3.3x floor < 4x: no queueing
    assert lim.limit > 40 and seen["shed"] == 0
    assert all(b >= a for a, b in zip(seen["limits"], seen["limits"][1:])), "rose monotonically"
    assert lim.limit <= 2 * 40 + int(math.sqrt(80)) + 1, "grows only while the limit is in use"


def test_falls_under_queueing_to_where_latency_meets_the_target_and_recovers() -> None:
    lim, clock = make(initial=256)
    drive(lim, clock, offered=10, windows=5)
    seen = drive(lim, clock, offered=2000, windows=40)
    # target = 4 x floor = rtt(48): the limit settles around 48, oscillating by ~sqrt(limit)
    tail = seen["limits"][-10:]
    assert 36 <= min(tail) and max(tail) <= 60, tail
    assert rtt(lim.limit) <= 1.3 * lim.tolerance * FLOOR_S
    assert seen["shed"] > 1900
    # the fall is fast: from 256 to within 25 % of the target in under a second (10 windows)
    assert next(i for i, x in enumerate(seen["limits"]) if x <= 60) <= 8, seen["limits"][:10]
    # the floor was not raised by the queueing
    assert lim.floor_s == pytest.approx(FLOOR_S)
    # back to a moderate load: nothing shed after a few windows
    seen = drive(lim, clock, offered=40, windows=10)
    assert seen["shed"] == 0


def test_stays_within_the_ceiling_and_the_floor_limit() -> None:
    lim, clock = make(initial=64, max_limit=100, min_limit=20)
    drive(lim, clock, offered=10, windows=3)
    seen = drive(lim, clock, offered=5000, windows=30, model=lambda k: FLOOR_S)  # never queues
    assert max(seen["limits"]) == 100 and lim.limit == 100
    seen = drive(lim, clock, offered=5000, windows=30, model=lambda k: FLOOR_S * 50)  # always slow
    assert min(seen["limits"]) == 20 and lim.limit == 20


def test_decrease_is_at_most_max_cut_per_window() -> None:
    lim, clock = make(initial=400, max_cut=0.5)
    drive(lim, clock, offered=10, windows=3)
    seen = drive(lim, clock, offered=5000, windows=3, model=lambda k: FLOOR_S * 100)
    assert seen["limits"] == [200, 100, 50]
    lim, clock = make(initial=400)                 # default: at most 20 % per window
    drive(lim, clock, offered=10, windows=3)
    seen = drive(lim, clock, offered=5000, windows=3, model=lambda k: FLOOR_S * 100)
    assert seen["limits"] == [320, 256, 204]


def test_the_floor_follows_a_slower_path_only_when_nearly_idle() -> None:
    lim, clock = make(light_in_flight=12)
    drive(lim, clock, offered=10, windows=5)
    slower = lambda k: 2 * FLOOR_S  # noqa: E731
    drive(lim, clock, offered=30, windows=30, model=slower)     # busy: the floor stays
    assert lim.floor_s == pytest.approx(FLOOR_S)
    drive(lim, clock, offered=10, windows=60, model=slower)     # idle: it follows
    assert lim.floor_s == pytest.approx(2 * FLOOR_S, rel=0.1)


def test_sheddable_traffic_is_refused_first() -> None:
    lim, _ = make(initial=20, sheddable_fraction=0.5)
    assert lim.sheddable_limit == 10
    got = [lim.admit(SHEDDABLE, 1.0) for _ in range(12)]
    assert got.count(ADMITTED) == 10 and got[10:] == [LIMIT, LIMIT]
    assert not lim.shadow_allowed()
    got = [lim.admit(CRITICAL, 1.0) for _ in range(12)]
    assert got.count(ADMITTED) == 10 and lim.in_flight == 20


def test_deadlines_refused_against_the_floor_and_the_estimate() -> None:
    lim, clock = make()
    assert lim.admit(CRITICAL, 1e-6) == ADMITTED, "nothing measured yet: nothing refused"
    lim.done(clock.t, False)
    drive(lim, clock, offered=10, windows=3)
    assert lim.admit(CRITICAL, FLOOR_S / 2) == DEADLINE_FLOOR
    drive(lim, clock, offered=64, windows=1)      # the last window queued: rtt(32) > floor
    assert lim.estimate_s == pytest.approx((rtt(32) + FLOOR_S) / 2), "smoothed over two windows"
    assert lim.admit(CRITICAL, FLOOR_S * 1.5) == DEADLINE_QUEUE
    assert lim.admit(CRITICAL, rtt(32)) == ADMITTED
    assert lim.in_flight == 1, "refusals are not counted in flight"


def test_done_recomputes_once_per_window_by_itself() -> None:
    lim, clock = make(min_samples=1)
    for i in range(45):
        assert lim.admit(CRITICAL, 1.0) == ADMITTED
        clock.t += 0.01
        lim.done(clock.t - FLOOR_S, True)
    assert lim.updates == 4 and lim.in_flight == 0          # 0.45 s of completions, 0.1 s windows
    assert lim.floor_s == pytest.approx(FLOOR_S)
    lim.admit(CRITICAL, 1.0)
    lim.done(clock.t, False)                                 # a failure: no round trip recorded
    assert lim.in_flight == 0 and lim.updates == 4


@pytest.mark.parametrize("raw, want, bad", [
    (None, CRITICAL, False), (b"critical", CRITICAL, False), (b"sheddable", SHEDDABLE, False),
    (b" Sheddable ", SHEDDABLE, False), (b"urgent", CRITICAL, True), (b"", CRITICAL, True),
    (b"\xff\x00", CRITICAL, True)])
def test_priority_header_parsing(raw: bytes | None, want: int, bad: bool) -> None:
    assert parse_priority(raw, CRITICAL) == (want, bad)


def test_config_checks_admission_fields() -> None:
    cfg = GatewayConfig.from_env({"INFERGATE_MODEL_PRIORITIES": "clf:sheddable, big:critical",
                                  "INFERGATE_ADMISSION_TOLERANCE": "3.5"})
    assert cfg.model_priorities == {"clf": "sheddable", "big": "critical"} and cfg.admission_tolerance == 3.5
    for env in ({"INFERGATE_MODEL_PRIORITIES": "clf:urgent"}, {"INFERGATE_ADMISSION": "magic"},
                {"INFERGATE_ADMISSION_TOLERANCE": "1"}, {"INFERGATE_DEFAULT_PRIORITY": "low"},
                {"INFERGATE_ADMISSION_SHEDDABLE_FRACTION": "0"}):
        with pytest.raises(ValueError):
            GatewayConfig.from_env(env)
    with pytest.raises(ValueError):
        Limiter(initial=8, min_limit=16)


def test_a_quiet_spell_forgets_a_past_overload_up_to_the_initial_limit() -> None:
    lim, clock = make(initial=64)
    drive(lim, clock, offered=10, windows=3)
    drive(lim, clock, offered=5000, windows=20, model=lambda k: FLOOR_S * 50)
    assert lim.limit == 8
    seen = drive(lim, clock, offered=2, windows=30)       # too few answers to judge: quiet
    assert seen["limits"][0] > 8 and lim.limit == 64, seen["limits"]
    lim.limit = 8
    drive(lim, clock, offered=8, windows=20, model=lambda k: FLOOR_S * 50)   # busy, < min_samples
    assert lim.limit == 8, "a busy window with too few answers is not a quiet one"
    drive(lim, clock, offered=5000, windows=20, model=lambda k: FLOOR_S * 50)
    seen = drive(lim, clock, offered=12, windows=30)      # answered, fast, limit unused
    assert lim.limit == 64, seen["limits"]
    seen = drive(lim, clock, offered=2, windows=50)
    assert lim.limit == 64, "never above the initial limit without use"


async def test_a_shadow_call_is_sheddable_traffic() -> None:
    """The pipeline asks the admission before it sends a shadow call (gateway/app.py wires
    `Limiter.shadow_allowed` in at start-up); refused, it is counted as dropped."""
    import asyncio
    from types import SimpleNamespace

    import numpy as np
    from prometheus_client import CollectorRegistry

    from gateway.errors import ErrorMap
    from gateway.metrics import GatewayMetrics
    from gateway.pipeline import Pipeline
    from gateway.unexpected import UnexpectedErrors

    reg = CollectorRegistry()
    submitted = []

    def submit(rows, deadline):
        submitted.append(rows)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result((np.zeros((1, 1), np.float32), None))
        return fut

    batcher = SimpleNamespace(submit=submit)
    routes = SimpleNamespace(record_shadow=lambda *args: None)
    p = Pipeline(routes, None, {"shadow-target": batcher}, GatewayMetrics(reg), ErrorMap(), UnexpectedErrors(reg))
    lim, _ = make(initial=8, min_limit=8, sheddable_fraction=0.5)
    p.shadow_allowed = lim.shadow_allowed
    for _ in range(4):
        lim.admit(CRITICAL, 1.0)
    a = SimpleNamespace(shadow=("b", "shadow-target"))
    p._start_shadow(a, np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32), 1e9)
    assert not submitted and reg.get_sample_value("infergate_shadow_dropped_total") == 1
    lim.done(0.0, False)                      # 3 in flight < 4: shadow calls go out again
    p._start_shadow(a, np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32), 1e9)
    await p.drain_shadows(1.0)
    assert len(submitted) == 1 and reg.get_sample_value("infergate_shadow_dropped_total") == 1
