"""Redis faults under load, between the gateway and a real redis-server (behind `FaultProxy`).

(a) The experiments store (`--redis-url`): inference never waits on it, so while it is
    black-holed or resetting the gateway keeps serving its last good config (only 200s);
    an admin write answers 503 `store_unavailable` (or, retried by redis-py, 200 once the
    path heals) within a bound; once the path heals the gateway picks up a config written
    to Redis during the outage without a restart.
(b) The online-features Redis (`--feature-redis-url`): the default failure policy answers
    503 `features_unavailable` within the deadline, and 200s come back within 2 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from faults.conftest import (DEADLINE_MS, SLACK_S, SLOW, RedisServer, drive, private_env, record,
                             start_gateway)
from faults.load import contract_violations, http_request, summarize
from faults.proxy import FaultProxy
from router.store import ExperimentStore
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer

TOKEN = "faults-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EXPERIMENT = "clf-demo"
RECOVERY_S = 2.0
RESYNC_LIMIT_S = 8.0   # the subscriber's reconnect backoff tops out at 5 s


def experiment(weight_a: float) -> dict:
    return {"model": "clf", "salt": "demo-1", "variants": [
        {"name": "a", "weight": weight_a, "target": {"model": "clf", "version": "1"}},
        {"name": "b", "weight": 100 - weight_a, "target": {"model": "clf", "version": "2"}}]}


def v1_plain(n: int = 64) -> list[bytes]:
    x = np.random.default_rng(5).standard_normal((n, 20)).astype(np.float32)
    hdr = {"x-request-timeout-ms": str(DEADLINE_MS)}
    return [http_request("/v1/infer", orjson.dumps({"model": "clf", "unit_id": f"e{i}",
                                                    "inputs": x[i].tolist()}), hdr) for i in range(n)]


def v1_entity(n: int = 64, users: int = 100) -> list[bytes]:
    x = np.random.default_rng(6).standard_normal((n, 4)).astype(np.float32)
    hdr = {"x-request-timeout-ms": str(DEADLINE_MS)}
    return [http_request("/v1/infer", orjson.dumps({"model": "clf", "unit_id": f"f{i}",
                                                    "entity": {"user_id": 1 + i % users},
                                                    "inputs": x[i].tolist()}), hdr) for i in range(n)]


# -- (a) the experiments store -------------------------------------------------------------

@pytest.fixture(scope="module")
def store_proxy(fault_redis: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", fault_redis.port), name="experiments-redis") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def store_gw(triton: TritonServer, store_proxy: FaultProxy,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    prefix = private_env()["INFERGATE_REDIS_KEY_PREFIX"]
    gw = start_gateway([triton.grpc_url], tmp_path_factory.mktemp("gw-store"),
                       args=["--features", "off", "--redis-url", store_proxy.url()],
                       env={"INFERGATE_REDIS_KEY_PREFIX": prefix, "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"})
    yield gw, prefix
    gw.stop()


async def _version(client: httpx.AsyncClient) -> tuple[int, float]:
    r = await client.get(f"/admin/experiments/{EXPERIMENT}", headers=AUTH)
    assert r.status_code == 200, r.text
    state = r.json()
    return state["version"], state["config"]["variants"][0]["weight"]


async def _exposures_still_flushed(client: httpx.AsyncClient, direct: aioredis.Redis, prefix: str,
                                   n: int = 40, within_s: float = 6.0) -> bool:
    """Whether exposures of `n` more requests reach Redis (the flusher runs every second; a
    reconnect may first spend redis-py's retries, ~3 s on a busy machine)."""
    alloc = (await client.get(f"/admin/experiments/{EXPERIMENT}", headers=AUTH)).json()["allocation"]["id"]
    key = f"{prefix}router:exposures:{EXPERIMENT}:{alloc}"

    async def total() -> int:
        return sum(int(v) for v in (await direct.hgetall(key)).values())

    start = await total()
    for i in range(n):
        r = await client.post("/v1/infer", json={"model": "clf", "unit_id": f"x{i}", "inputs": [0.1] * 20})
        assert r.status_code == 200, r.text
    t = time.perf_counter()
    while time.perf_counter() - t < within_s:
        if await total() >= start + n:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("fault", ["blackhole", "reset"] + (["refuse"] if SLOW else []))
async def test_experiments_store_fault_keeps_last_good_config_and_resyncs(
        fault: str, store_gw: tuple[GatewayProcess, str], store_proxy: FaultProxy,
        fault_redis: RedisServer) -> None:
    gw, prefix = store_gw
    direct = aioredis.from_url(fault_redis.url)
    store = ExperimentStore(direct, prefix)
    put_during: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        r = await client.put(f"/admin/experiments/{EXPERIMENT}", headers=AUTH, json=experiment(50))
        assert r.status_code == 200, r.text
        before = await _version(client)

        def on() -> None:
            getattr(store_proxy, fault)()

        async def admin_during_fault() -> None:
            await asyncio.sleep(0.9)  # inside the fault window
            t = time.perf_counter()
            r = await client.put("/admin/experiments/other", headers=AUTH,
                                 json={**experiment(50), "model": "clf-other"})
            put_during.append((r.status_code, time.perf_counter() - t))
            assert r.headers["content-type"].startswith("application/json")
            # 503 at once, or (redis-py retries) stored once the path heals: never a hang.
            # A 500 is the known bug below (checked at the end, once the scenario is recorded).
            assert r.status_code in (200, 500) or r.json()["error"] == "store_unavailable", r.text

        async def write_behind_its_back() -> None:
            await asyncio.sleep(1.0)
            await store.put(EXPERIMENT, {**experiment(80), "name": EXPERIMENT}, "direct")
            assert await _version(client) == before, "the live config changed during the outage"

        side = asyncio.gather(admin_during_fault(), write_behind_its_back())
        try:
            run, t_on, t_off = await drive(gw, v1_plain(), on, store_proxy.pass_through,
                                           warm_s=0.5, fault_s=1.6, after_s=0.5)
        finally:
            await side
        t_lift = time.perf_counter()
        while (got := await _version(client))[1] != 80:
            assert time.perf_counter() - t_lift < RESYNC_LIMIT_S, f"no resync after lifting: {got}"
            await asyncio.sleep(0.05)
        resync_s = time.perf_counter() - t_lift
        flushed = await _exposures_still_flushed(client, direct, prefix)
        r = await client.put(f"/admin/experiments/{EXPERIMENT}", headers=AUTH, json=experiment(50))
        assert r.status_code == 200, r.text
    await direct.aclose()
    summary = summarize(run, deadline_s=DEADLINE_MS / 1e3, t_on=t_on, t_off=t_off)
    summary.update(admin_put_during_fault={"status": put_during[0][0], "ms": round(put_during[0][1] * 1e3)},
                   resync_after_lift_s=round(resync_s, 3), version_before=before[0], version_after=got[0],
                   exposures_flushed_after=flushed)
    record(f"experiments_redis/{fault}", summary)
    bad = contract_violations(run, deadline_s=DEADLINE_MS / 1e3, slack_s=SLACK_S, allowed=frozenset({200}))
    assert not bad, f"{len(bad)} violations, first: {bad[:8]}\n{summary}"
    assert put_during[0][1] < 4.0, "an admin write hung on a dead store"
    assert put_during[0][0] in (200, 503)
    assert flushed, "exposure flushing stopped after the fault"


class _ResetRedis:
    """A Redis client whose every call fails the way redis-py does under uvloop when the
    connection is reset before its first write (a race a real server cannot be made to lose
    on demand: through the proxy it shows in ~2 % of reconnects)."""

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False "
                               "0x55755fa43530>; the handler is closed")
        return fail


@pytest.mark.parametrize("call", ["load_all", "put", "history", "add_exposures", "add_units", "add_outcomes",
                                  "read_outcomes", "rollbacks"])
async def test_store_translates_a_reset_connection_into_store_unavailable(call: str) -> None:
    from router.errors import StoreUnavailable

    store = ExperimentStore(_ResetRedis(), "x:")  # type: ignore[arg-type]
    args = {"load_all": (), "put": ("e", {}, "t"), "history": ("e",), "add_exposures": ("e", "a", {"a": 1}),
            "add_units": ("e", "a", {"a": {"u1"}}, 60), "add_outcomes": ("e", "g", 1, {"a|e": 1}, 60),
            "read_outcomes": ("e", "g", range(3)), "rollbacks": ()}
    with pytest.raises(StoreUnavailable):
        await getattr(store, call)(*args[call])


def test_store_under_real_resets_with_uvloop_raises_only_store_unavailable(fault_redis: RedisServer,
                                                                          proxy_factory) -> None:
    import uvloop
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from router.errors import StoreUnavailable

    proxy = proxy_factory(("127.0.0.1", fault_redis.port), "store-resets")

    async def main() -> int:
        # The gateway's client settings (gateway/components.py).
        client = aioredis.from_url(proxy.url(), socket_timeout=1.0, socket_connect_timeout=1.0,
                                   retry=Retry(ExponentialBackoff(cap=0.5), 2))
        store = ExperimentStore(client, f"resets-{time.monotonic_ns()}:")
        await store.put("e", {"a": 1}, "t")
        proxy.reset()
        try:
            for i in range(300):
                try:
                    await store.put("e", {"a": 1}, "t")
                except StoreUnavailable:
                    continue
            return i + 1
        finally:
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == 300


# -- (b) the online-features Redis ---------------------------------------------------------

@pytest.fixture(scope="module")
def feature_repo(fault_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.repo.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("feature-repo"), project="faults", online="redis",
                   redis_url=fault_redis.url)
    ws.materialize(ws.apply(rows=100, seed=3))
    return ws.path


@pytest.fixture(scope="module")
def features_proxy(fault_redis: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", fault_redis.port), name="features-redis") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def features_gw(triton: TritonServer, features_proxy: FaultProxy, feature_repo: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway([triton.grpc_url], tmp_path_factory.mktemp("gw-features"),
                       args=["--features", "redis", "--feature-repo", str(feature_repo),
                             "--feature-redis-url", features_proxy.url()])
    yield gw
    gw.stop()


FEATURE_FAULTS = {"blackhole": lambda p: p.blackhole(), "reset": lambda p: p.reset(),
                  "latency_300ms": lambda p: p.latency(0.3)}


@pytest.mark.parametrize("fault", ["blackhole", "reset"] + (["latency_300ms"] if SLOW else []))
async def test_features_redis_fault_answers_503_then_recovers(
        fault: str, features_gw: GatewayProcess, features_proxy: FaultProxy) -> None:
    try:
        run, t_on, t_off = await drive(features_gw, v1_entity(), lambda: FEATURE_FAULTS[fault](features_proxy),
                                       features_proxy.pass_through, warm_s=0.5, fault_s=1.2, after_s=2.5)
    finally:
        features_proxy.pass_through()
    summary = summarize(run, deadline_s=DEADLINE_MS / 1e3, t_on=t_on, t_off=t_off)
    record(f"features_redis/{fault}", summary)
    bad = contract_violations(run, deadline_s=DEADLINE_MS / 1e3, slack_s=SLACK_S)
    assert not bad, f"{len(bad)} violations, first: {bad[:8]}\n{summary}"
    errors = {k.split(":", 1)[1] for k in summary["by_error"]}
    assert errors <= {"features_unavailable"}, summary
    assert summary["during_fault"].get("503", 0) > 0, f"the fault never showed: {summary}"
    assert summary["recovery_s"] is not None and summary["recovery_s"] <= RECOVERY_S, summary
    late = [o for o in run.outcomes if o.t_start >= t_off + RECOVERY_S and o.status != 200]
    assert not late, f"{len(late)} non-200 answers {RECOVERY_S}s after lifting: {late[:5]}"
