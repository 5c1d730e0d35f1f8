"""Admin API + hot reload across replicas, against real Redis pub/sub.

The first replica runs in-process behind httpx's ASGI transport; the second is a separate
Python process (tests/router/_router_replica.py) that prints a line per config swap.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from router import RouterService
from router.assign import CompiledExperiment
from router.admin import admin_routes, authenticate, tokens_from_env
from router.config import default_experiments
from router.errors import ConfigError

from _router_helpers import experiment_dict, units

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"ops": "s3cret-ops", "ci": "s3cret-ci"}
AUTH = {"authorization": "Bearer s3cret-ops"}


def demo_body(a: float, b: float, **extra) -> dict:
    body = experiment_dict({"a": a, "b": b}, name="clf-demo", salt="demo-1", **extra)
    body["variants"][0]["target"] = {"model": "clf", "version": "1"}
    body["variants"][1]["target"] = {"model": "clf", "version": "2"}
    return body


@pytest.fixture
async def service(redis_client, prefix, registry):
    svc = RouterService(redis_client, default_experiments(), TOKENS, registry, key_prefix=prefix,
                        flush_interval_s=0.2)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
async def admin(service):
    app = Starlette(routes=admin_routes(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        yield client


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, "replica exited"
        return json.loads(raw)

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def spawn_replica(prefix: str) -> Replica:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests/router/_router_replica.py"), prefix,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return Replica(proc)


async def test_auth_required(admin) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-ops"}):
        res = await admin.put("/admin/experiments/clf-demo", json=demo_body(80, 20), headers=headers)
        assert res.status_code == 401 and res.json()["error"] == "unauthorized"
        assert (await admin.get("/admin/experiments", headers=headers)).status_code == 401
    assert authenticate("Bearer s3cret-ci", TOKENS) == "ci"
    assert tokens_from_env({"INFERGATE_ADMIN_TOKENS": "ops:x, ci:y"}) == {"ops": "x", "ci": "y"}
    with pytest.raises(ConfigError):
        tokens_from_env({"INFERGATE_ADMIN_TOKENS": "nocolon"})


async def test_weight_change_reaches_another_process_within_1s(admin, service, prefix, redis_client) -> None:
    replica = await spawn_replica(prefix)
    try:
        ready = await replica.line(timeout=20)
        assert ready["event"] == "ready" and ready["weights"]["clf-demo"] == {"a": 50.0, "b": 50.0}

        t0 = time.monotonic()
        res = await admin.put("/admin/experiments/clf-demo", json=demo_body(80, 20), headers=AUTH)
        assert res.status_code == 200, res.text
        assert res.json()["version"] == 1
        change = await replica.line(timeout=1.0)
        latency = change["t"] - t0  # CLOCK_MONOTONIC is system-wide on Linux
        print(f"\nreload latency to a second process: {latency * 1e3:.1f} ms")
        assert change["weights"]["clf-demo"] == {"a": 80.0, "b": 20.0} and latency < 1.0
        assert service.router.experiment("clf-demo").config.variant("b").weight == 20  # applied locally too

        # a bad config is rejected with 400 and the old one keeps serving, here and there
        bad = await admin.put("/admin/experiments/clf-demo", json=demo_body(60, 30), headers=AUTH)
        assert bad.status_code == 400 and bad.json()["error"] == "weights_sum"
        assert "must add up to 100" in bad.json()["message"]
        garbage = await admin.put("/admin/experiments/clf-demo", content=b"{nope", headers=AUTH)
        assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_json"
        with pytest.raises(asyncio.TimeoutError):
            await replica.line(timeout=0.5)
        state = (await admin.get("/admin/experiments/clf-demo", headers=AUTH)).json()
        assert state["version"] == 1 and state["allocation"]["buckets"] == {"a": 8000, "b": 2000}
        assert state["token_id"] == "ops" and "s3cret" not in json.dumps(state)

        # a replica that starts later loads the stored config
        late = await spawn_replica(prefix)
        try:
            assert (await late.line(timeout=20))["weights"]["clf-demo"] == {"a": 80.0, "b": 20.0}
        finally:
            await late.close()

        hist = (await admin.get("/admin/experiments/clf-demo/history", headers=AUTH)).json()["history"]
        assert [h["version"] for h in hist] == [1] and hist[0]["token_id"] == "ops"
        async for key in redis_client.scan_iter(match=f"{prefix}*"):
            assert b"s3cret" not in (await redis_client.dump(key) or b"")  # tokens never stored
    finally:
        await replica.close()


async def test_conflicts_and_not_found(admin) -> None:
    other = experiment_dict({"x": 100}, name="other", model="clf")
    res = await admin.put("/admin/experiments/other", json=other, headers=AUTH)
    assert res.status_code == 409 and res.json()["error"] == "model_conflict"
    res = await admin.put("/admin/experiments/clf-demo", json={**demo_body(50, 50), "name": "x"}, headers=AUTH)
    assert res.status_code == 400 and res.json()["error"] == "name_mismatch"
    assert (await admin.get("/admin/experiments/nope", headers=AUTH)).status_code == 404
    new_model = await admin.put("/admin/experiments/reg", json=experiment_dict({"x": 100}, name="reg", model="reg"),
                                headers=AUTH)
    assert new_model.status_code == 200
    listing = (await admin.get("/admin/experiments", headers=AUTH)).json()["experiments"]
    assert [e["name"] for e in listing] == ["clf-demo", "reg"]


async def test_srm_in_admin_state_and_gauge(admin, service, registry) -> None:
    router = service.router
    for u in units(100_000):
        router.assign("clf", u)
    await service.flush_exposures()
    state = (await admin.get("/admin/experiments/clf-demo", headers=AUTH)).json()
    assert state["exposures"]["source"] == "aggregate" and sum(state["exposures"]["counts"].values()) == 100_000
    assert state["srm"]["flagged"] is False
    # a bug that re-sends 4,000 of arm b's units: requests skew (~48/52), distinct units do not
    shadow_copy = CompiledExperiment(router.experiment("clf-demo").config)  # counts elsewhere
    arm_b = [u for u in units(100_000) if shadow_copy.assign(u).variant == "b"][:4_000]
    for u in arm_b:
        assert router.assign("clf", u).variant == "b"
    await service.flush_exposures()
    state = (await admin.get("/admin/experiments/clf-demo", headers=AUTH)).json()
    assert state["srm_requests"]["flagged"] is True and state["srm"]["basis"] == "units"
    assert state["srm"]["flagged"] is False and sum(state["units"]["counts"].values()) == 100_000
    # 4,000 new units reach arm b only (a's were lost): the distinct units skew, and SRM flags it
    extra = [u for u in units(20_000, "late") if shadow_copy.assign(u).variant == "b"][:4_000]
    for u in extra:
        router.assign("clf", u)
    await service.flush_exposures()
    state = (await admin.get("/admin/experiments/clf-demo", headers=AUTH)).json()
    assert state["srm"]["flagged"] is True and state["srm"]["p_value"] < 0.001
    assert state["units"]["counts"]["b"] - state["units"]["counts"]["a"] > 3_000
    assert registry.get_sample_value("router_srm_flagged", {"experiment": "clf-demo"}) == 1.0


async def test_shadow_metrics(service, registry) -> None:
    body = demo_body(50, 50, shadow={"variant": "c", "share": 100, "target": {"model": "clf", "version": "3"}})
    await service.put_experiment("clf-demo", body, "ops")
    a = service.router.assign("clf", "someone")
    assert a.shadow is not None and a.shadow[0] == "c"
    service.record_shadow(a, 0.012, 0.03)
    labels = {"experiment": "clf-demo", "variant": "c"}
    assert registry.get_sample_value("router_shadow_latency_seconds_count", labels) == 1.0
    assert registry.get_sample_value("router_shadow_prediction_diff_sum", labels) == pytest.approx(0.03)
    assert repr(service).startswith("<RouterService [clf-demo@1] redis=up")


async def test_served_by_uvicorn_on_a_free_port(service) -> None:
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=admin_routes(service)), log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.put("/admin/experiments/clf-demo", json=demo_body(70, 30))).status_code == 401
            res = await client.put("/admin/experiments/clf-demo", json=demo_body(70, 30), headers=AUTH)
            assert res.status_code == 200 and res.json()["state"]["allocation"]["buckets"] == {"a": 7000, "b": 3000}
    finally:
        server.should_exit = True
        await task
        sock.close()
