"""A bug is never a silent 500: a fault injected inside the request path (the router, a codec,
the Triton call) answers 500 `internal`, and the log holds its traceback once, with the
request's model and variant, rate-limited, and `infergate_unexpected_errors_total` counts it.

The gateway runs in this process (real Triton, real Redis) so the test can break one of its
parts on purpose; a real server cannot be made to raise a TypeError on demand.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import AsyncIterator

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.unexpected import UnexpectedErrors
from runtime.triton import TritonServer

X = np.zeros(20).tolist()


@pytest.fixture
async def inproc(triton: TritonServer) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    cfg = GatewayConfig(triton_urls=(triton.grpc_url,), features="off",
                        redis_key_prefix=f"test-unexp-{uuid.uuid4().hex[:8]}:")
    gw = Gateway(cfg, CollectorRegistry())
    await gw.components.start(triton_wait_s=30)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw), base_url="http://gw") as client:
            yield gw, client
    finally:
        await gw.components.stop()


def _count(gw: Gateway) -> float:
    return gw.components.registry.get_sample_value("infergate_unexpected_errors_total") or 0.0


def _tracebacks(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and needle in str(r.exc_info[1])]


async def test_a_bug_in_the_triton_call_is_logged_once_per_batch_with_model_and_variant(
        inproc, caplog: pytest.LogCaptureFixture) -> None:
    gw, client = inproc
    for batcher in gw.components.batchers.values():
        async def broken(x, timeout):
            raise ZeroDivisionError("injected: bug in the infer call")
        batcher._infer = broken
    caplog.set_level(logging.ERROR, logger="infergate")
    # Eight concurrent requests for one unit: one batch, one exception, one traceback.
    rs = await asyncio.gather(*(client.post("/v1/infer", json={"model": "clf", "unit_id": "u1", "inputs": X})
                                for _ in range(8)))
    assert {r.status_code for r in rs} == {500}
    assert {r.json()["error"] for r in rs} == {"internal"}
    found = _tracebacks(caplog, "injected: bug in the infer call")
    assert 1 <= len(found) <= 8
    rec = found[0]
    assert "model=clf" in rec.getMessage() and "variant=" in rec.getMessage()
    assert "variant=None" not in rec.getMessage()
    text = caplog.text
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    # One exception object per batch: logged once, however many requests it failed.
    batches = len({id(r.exc_info[1]) for r in found})
    assert len(found) == batches
    assert _count(gw) == batches


async def test_a_bug_in_the_router_and_in_a_codec_leave_a_traceback(
        inproc, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    gw, client = inproc
    c = gw.components
    caplog.set_level(logging.ERROR, logger="infergate")

    def broken_assign(self, *args, **kwargs):
        raise KeyError("injected: bug in the router")

    with monkeypatch.context() as m:
        m.setattr(type(c.routes.router), "assign", broken_assign)
        r = await client.post("/v1/infer", json={"model": "clf", "unit_id": "u2", "inputs": X})
    assert r.status_code == 500 and r.json() == {"error": "internal", "message": "internal error"}
    rec, = _tracebacks(caplog, "injected: bug in the router")
    assert "model=clf" in rec.getMessage()

    def broken_render(self, req, res):
        raise TypeError("injected: bug in the v1 codec")

    with monkeypatch.context() as m:
        m.setattr(type(c.v1), "render", broken_render)
        r = await client.post("/v1/infer", json={"model": "clf", "unit_id": "u3", "inputs": X})
    assert r.status_code == 500 and r.json()["error"] == "internal"
    rec, = _tracebacks(caplog, "injected: bug in the v1 codec")
    assert "Traceback (most recent call last)" in caplog.text
    assert _count(gw) == 2


def test_the_log_is_rate_limited_and_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("infergate.test-unexpected")
    u = UnexpectedErrors(CollectorRegistry(), log, burst=3, window_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="infergate.test-unexpected")
    for i in range(50):
        try:
            raise ValueError(f"hot bug {i}")
        except ValueError as exc:
            u.report(exc, "test", "clf", "a")
            u.report(exc, "test", "clf", "a")   # the same exception again: not logged twice
    assert len([r for r in caplog.records if r.exc_info]) == 3
    now[0] = 11.0
    try:
        raise ValueError("after the window")
    except ValueError as exc:
        u.report(exc, "test", "clf", "a")
    assert "47 more unexpected errors" in caplog.text
    assert len([r for r in caplog.records if r.exc_info]) == 4
