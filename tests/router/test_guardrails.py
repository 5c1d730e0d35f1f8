"""Guardrails against real Redis: outcome counts of every replica summed over a sliding
window, a sustained breach rolled back to control once, with its reason and figures.

The services here run no background loop: each test calls ``evaluate_guardrails()`` itself,
so "two evaluations in a row" is exact and nothing depends on timing.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from router import RouterService
from router.admin import admin_routes
from router.errors import VersionConflict
from router.guardrails import VariantFigures, judge
from router.outcomes import BOUNDS, VariantOutcomes, quantile_ms

from _router_helpers import experiment, experiment_dict

GUARD = {"max_error_rate": 0.02, "max_p99_ms": 250}


def body(a: float = 90, b: float = 10, **guard) -> dict:
    return experiment_dict({"a": a, "b": b}, name="exp", salt="g1", guardrails={**GUARD, **guard})


def service(redis_client, prefix, registry=None, **kw) -> RouterService:
    return RouterService(redis_client, None, {"ops": "t0ken"}, registry or CollectorRegistry(),
                         key_prefix=prefix, guardrail_min_requests=50, **kw)


def feed(svc: RouterService, variant: str, ok: int = 0, failed: int = 0, latency_s: float = 0.004) -> None:
    out = svc.router.experiment("exp").outcomes[variant]
    for _ in range(ok):
        out.ok(latency_s)
    for _ in range(failed):
        out.failed()


def weights(svc: RouterService) -> dict[str, float]:
    return {v.name: v.weight for v in svc.router.experiment("exp").config.variants}


# -- pure parts ----------------------------------------------------------------------------


def test_outcome_buckets_and_p99() -> None:
    o = VariantOutcomes()
    for ms in range(1, 101):  # 1..100 ms
        o.ok(ms / 1e3)
    o.failed()
    assert o.requests == 101 and o.errors == 1
    p99 = quantile_ms(o.latency)
    assert 99 <= p99 <= 99 * 2 ** (1 / 8) + 1e-9  # the bucket's upper bound: never under, ≤ 9 % over
    assert quantile_ms([0] * (len(BOUNDS) + 1)) is None
    o.ok(1e6)
    assert o.latency[-1] == 1  # overflow bucket


def test_judge_needs_min_requests_and_a_streak() -> None:
    cfg = experiment({"a": 90, "b": 10}, guardrails=GUARD)
    bad = {"a": VariantFigures(1000, 0, 5.0), "b": VariantFigures(100, 10, 5.0)}
    streaks: dict[str, int] = {}
    v1 = judge(cfg, bad, 100, streaks, 2, 10.0)
    assert v1.state == "breached" and v1.rollback == () and "b" in v1.breaches
    v2 = judge(cfg, bad, 100, streaks, 2, 10.0)
    assert v2.rollback == ("b",)
    few = {"a": VariantFigures(1000, 0, 5.0), "b": VariantFigures(99, 99, None)}
    v3 = judge(cfg, few, 100, streaks, 2, 10.0)
    assert v3.state == "insufficient_data" and v3.rollback == () and streaks["b"] == 0
    slow = {"a": VariantFigures(1000, 0, 5.0), "b": VariantFigures(100, 0, 400.0)}
    assert judge(cfg, slow, 100, {}, 1, 10.0).breaches["b"] == ["p99 400.0 ms > 250.0 ms"]
    # control is the reference: its breach is shown, never rolled back
    sick_control = {"a": VariantFigures(1000, 500, 5.0), "b": VariantFigures(100, 0, 5.0)}
    v4 = judge(cfg, sick_control, 100, {}, 1, 10.0)
    assert v4.breaches == {"a": ["error rate 0.5000 > 0.02"]} and v4.rollback == () and v4.state == "ok"
    assert judge(experiment({"a": 90, "b": 10}), bad, 100, {}, 1, 10.0).state == "off"


# -- against Redis ---------------------------------------------------------------------------


async def test_sustained_breach_rolls_back_once_with_reason_and_figures(redis_client, prefix, registry) -> None:
    svc = service(redis_client, prefix, registry)
    await svc.put_experiment("exp", body(), "ops", reason="ramp b to 10 %")
    feed(svc, "a", ok=900)
    feed(svc, "b", ok=90, failed=10)
    assert await svc.evaluate_guardrails() == []  # one breaching evaluation is not sustained
    state = svc.state("exp")["guardrails"]
    assert state["state"] == "breached" and state["variants"]["b"] == {
        "requests": 100, "errors": 10, "error_rate": 0.1, "p99_ms": pytest.approx(quantile_ms({
            next(i for i, b in enumerate(BOUNDS) if b >= 0.004): 1}), abs=1e-3)}
    assert registry.get_sample_value("router_guardrail_breached", {"experiment": "exp", "variant": "b"}) == 1.0
    assert registry.get_sample_value("router_guardrail_breached", {"experiment": "exp", "variant": "a"}) == 0.0

    assert await svc.evaluate_guardrails() == ["exp"]
    assert weights(svc) == {"a": 100, "b": 0}
    hist = await svc.history("exp")
    assert [h["token_id"] for h in hist] == ["guardrail", "ops"] and hist[1]["reason"] == "ramp b to 10 %"
    assert "b: error rate 0.1000 > 0.02" in hist[0]["reason"] and "moved to control 'a'" in hist[0]["reason"]
    figures = hist[0]["figures"]
    assert figures["variants"]["b"]["errors"] == 10 and figures["moved"] == {"b": 10.0}
    state = svc.state("exp")
    assert state["guardrails"]["state"] == "rolled_back" and state["token_id"] == "guardrail"
    last = state["guardrails"]["last_rollback"]
    assert last["variant"] == "b" and last["version"] == 2 and last["figures"] == figures
    assert registry.get_sample_value("router_guardrail_rollbacks_total", {"experiment": "exp", "variant": "b"}) == 1.0
    # the new allocation starts a fresh window: nothing more happens
    for _ in range(3):
        assert await svc.evaluate_guardrails() == []
    assert len(await svc.history("exp")) == 2


async def test_two_replicas_sum_their_counts_and_only_one_rolls_back(redis_client, prefix) -> None:
    regs = [CollectorRegistry(), CollectorRegistry()]
    r1, r2 = (service(redis_client, prefix, reg) for reg in regs)
    await r1.put_experiment("exp", body(), "ops")
    await r2.resync()
    for r in (r1, r2):  # 30 requests of b each: only together are they over min_requests (50)
        feed(r, "a", ok=300)
        feed(r, "b", ok=27, failed=3)
    for _ in range(2):
        done = await asyncio.gather(r1.evaluate_guardrails(), r2.evaluate_guardrails())
    assert sorted(done, key=len) == [[], ["exp"]]
    await r1.resync(), await r2.resync()
    assert weights(r1) == weights(r2) == {"a": 100, "b": 0}
    assert [h["token_id"] for h in await r1.history("exp")] == ["guardrail", "ops"]
    total = sum(reg.get_sample_value("router_guardrail_rollbacks_total", {"experiment": "exp", "variant": "b"}) or 0
                for reg in regs)
    assert total == 1.0
    figures = (await r1.history("exp"))[0]["figures"]
    assert figures["variants"]["b"] == {"requests": 60, "errors": 6, "error_rate": 0.1,
                                        "p99_ms": figures["variants"]["b"]["p99_ms"]}
    assert figures["variants"]["a"]["requests"] == 600


async def test_below_min_sample_size_nothing_happens(redis_client, prefix) -> None:
    svc = service(redis_client, prefix)
    await svc.put_experiment("exp", body(), "ops")
    feed(svc, "a", ok=500)
    feed(svc, "b", failed=49)  # all failing, but one short of min_requests
    for _ in range(4):
        assert await svc.evaluate_guardrails() == []
    state = svc.state("exp")["guardrails"]
    assert state["state"] == "insufficient_data" and state["variants"]["b"]["errors"] == 49
    assert weights(svc) == {"a": 90, "b": 10} and len(await svc.history("exp")) == 1


async def test_healthy_treatment_is_never_rolled_back(redis_client, prefix) -> None:
    svc = service(redis_client, prefix)
    await svc.put_experiment("exp", body(), "ops")
    for _ in range(5):
        feed(svc, "a", ok=990, failed=10)
        feed(svc, "b", ok=99, failed=1, latency_s=0.2)  # 1 % errors, p99 ≈ 200 ms: inside both limits
        assert await svc.evaluate_guardrails() == []
    state = svc.state("exp")["guardrails"]
    assert state["state"] == "ok" and state["variants"]["b"]["requests"] == 500
    assert weights(svc) == {"a": 90, "b": 10}


async def test_slow_treatment_rolls_back_on_p99_and_window_override(redis_client, prefix) -> None:
    svc = service(redis_client, prefix)
    await svc.put_experiment("exp", body(max_error_rate=None, min_requests=20, window_s=3), "ops")
    feed(svc, "a", ok=200)
    feed(svc, "b", ok=25, latency_s=0.4)
    await svc.evaluate_guardrails()
    g = svc.state("exp")["guardrails"]
    assert g["window_s"] == 3 and g["min_requests"] == 20 and g["configured"]["max_error_rate"] is None
    assert await svc.evaluate_guardrails() == ["exp"]
    assert "p99" in (await svc.history("exp"))[0]["reason"]


async def test_control_breach_moves_nothing(redis_client, prefix, registry) -> None:
    svc = service(redis_client, prefix, registry)
    await svc.put_experiment("exp", body(), "ops")
    for _ in range(3):
        feed(svc, "a", ok=100, failed=100)
        feed(svc, "b", ok=100)
        assert await svc.evaluate_guardrails() == []
    assert registry.get_sample_value("router_guardrail_breached", {"experiment": "exp", "variant": "a"}) == 1.0
    assert weights(svc) == {"a": 90, "b": 10}


async def test_window_slides(redis_client, prefix) -> None:
    now = [1_000_000.0]
    svc = service(redis_client, prefix, clock=lambda: now[0], guardrail_window_s=5.0)
    await svc.put_experiment("exp", body(), "ops")
    feed(svc, "b", ok=45, failed=5)
    await svc.evaluate_guardrails()
    assert svc.state("exp")["guardrails"]["state"] == "breached"
    now[0] += 5.0  # those counts' slot has left the window
    await svc.evaluate_guardrails()
    g = svc.state("exp")["guardrails"]
    assert g["state"] == "insufficient_data" and g["variants"]["b"]["requests"] == 0
    assert weights(svc) == {"a": 90, "b": 10}


async def test_compare_and_set_and_reason_through_the_admin_api(redis_client, prefix) -> None:
    svc = service(redis_client, prefix)
    v1 = await svc.put_experiment("exp", body(), "ops", expected_version=0)
    with pytest.raises(VersionConflict) as info:
        await svc.put_experiment("exp", body(80, 20), "ops", expected_version=0)
    assert info.value.current == v1 == 1
    app = Starlette(routes=admin_routes(svc))
    auth = {"authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as admin:
        res = await admin.put("/admin/experiments/exp", json=body(70, 30),
                              headers={**auth, "if-match": '"1"', "x-change-reason": "ramp to 30 %"})
        assert res.status_code == 200 and res.json()["version"] == 2
        res = await admin.put("/admin/experiments/exp", json=body(60, 40), headers={**auth, "if-match": "1"})
        assert res.status_code == 409
        assert res.json()["error"] == "version_conflict" and res.json()["current_version"] == 2
        assert "version 2" in res.json()["message"]
        for bad in ({"if-match": "W/\"1\""}, {"if-match": "latest"}, {"x-change-reason": " "},
                    {"x-change-reason": "x" * 1001}):
            res = await admin.put("/admin/experiments/exp", json=body(60, 40), headers={**auth, **bad})
            assert res.status_code == 400 and res.json()["error"] == "invalid_header", bad
        state = (await admin.get("/admin/experiments/exp", headers=auth)).json()
        assert state["version"] == 2 and state["reason"] == "ramp to 30 %"
        assert set(state["guardrails"]) == {"configured", "state", "window_s", "min_requests", "variants",
                                            "last_rollback"}
        hist = (await admin.get("/admin/experiments/exp/history", headers=auth)).json()["history"]
        assert [h.get("reason") for h in hist] == ["ramp to 30 %", None]


async def test_a_stale_verdict_loses_to_a_newer_change(redis_client, prefix) -> None:
    writer, stale = service(redis_client, prefix), service(redis_client, prefix)
    await writer.put_experiment("exp", body(), "ops")
    await stale.resync()
    feed(stale, "a", ok=500)
    feed(stale, "b", ok=90, failed=10)
    assert await stale.evaluate_guardrails() == []
    # a person changes the experiment; the stale replica has not heard of it yet (no subscriber)
    await writer.put_experiment("exp", body(80, 20), "ops", reason="person ramps b")
    assert weights(stale) == {"a": 90, "b": 10}
    assert await stale.evaluate_guardrails() == []  # its compare-and-set on version 1 fails: a no-op
    hist = await writer.history("exp")
    assert [(h["version"], h["token_id"]) for h in hist] == [(2, "ops"), (1, "ops")]
    await stale.resync()
    assert weights(stale) == {"a": 80, "b": 20}
