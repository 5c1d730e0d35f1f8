"""Fixtures for fault tests: a dedicated Triton and Redis, proxies in front of them, gateways
pointed at the proxies, and one place that records outcome counts per scenario.

Each fault scenario drives a steady closed-loop load through the gateway while a fault is
switched on and off (`drive`), then checks the contract: one response per request (200,
or 429/503 with a JSON error body), none later than its deadline + `SLACK_S`, no 5xx other
than 503, and 200s again soon after the fault is lifted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import orjson
import pytest

from faults.load import LoadRun, http_request, run_load
from faults.proxy import FaultProxy
from redis_proc import RedisProcess
from runtime.stack import GatewayProcess
from runtime.triton import ROOT, TritonRuntime, TritonServer

SLACK_S = float(os.environ.get("FAULT_SLACK_MS", "250")) / 1e3
DEADLINE_MS = 500
CONCURRENCY = 16
RESULTS = ROOT / "bench" / "results" / "faults.json"
SLOW = os.environ.get("RUN_SLOW") == "1"


_PREFIXES: list[str] = []  # every key prefix handed to a gateway here, dropped at the end


def private_env(**extra: str) -> dict[str, str]:
    prefix = f"faults-{uuid.uuid4().hex[:8]}:"
    _PREFIXES.append(prefix)
    return {"INFERGATE_REDIS_KEY_PREFIX": prefix, **extra}


@pytest.fixture(scope="session", autouse=True)
def _drop_gateway_keys() -> Iterator[None]:
    """The fault gateways' prediction streams and router keys in the shared Redis (the default
    experiments store; private servers go with their process): ~4 keys per gateway, left
    behind by every run before."""
    yield
    import redis

    client = redis.Redis.from_url(os.environ.get("INFERGATE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                                  socket_timeout=5, socket_connect_timeout=2)
    try:
        for prefix in _PREFIXES:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    except redis.RedisError:
        pass  # cleanup only: a Redis gone at the end is not a test failure
    finally:
        client.close()


def v1_requests(n: int = 64, *, deadline_ms: int = DEADLINE_MS, seed: int = 3) -> list[bytes]:
    x = np.random.default_rng(seed).standard_normal((n, 20)).astype(np.float32)
    hdr = {"x-request-timeout-ms": str(deadline_ms)}
    return [http_request("/v1/infer", orjson.dumps({"model": "clf", "unit_id": f"u{i}",
                                                    "inputs": x[i].tolist()}), hdr) for i in range(n)]


async def drive(gw: GatewayProcess, requests: list[bytes], fault_on: Callable[[], None],
                fault_off: Callable[[], None], *, warm_s: float = 1.0, fault_s: float = 1.5,
                after_s: float = 3.0, concurrency: int = CONCURRENCY,
                give_up_s: float = 5.0) -> tuple[LoadRun, float, float]:
    """Load the gateway for warm + fault + after seconds; the fault callbacks run in a thread
    (they may block, e.g. restarting Triton) while the load goes on. Returns (run, t_on, t_off)
    on the run's clock."""
    t0 = time.perf_counter()
    n = len(requests)
    lifted: list[float] = []

    def stop() -> bool:
        now = time.perf_counter() - t0
        return (bool(lifted) and now >= lifted[0] + after_s) or now > 120

    load = asyncio.ensure_future(run_load("127.0.0.1", gw.port, lambda i: requests[i % n],
                                          concurrency=concurrency, give_up_s=give_up_s, stop=stop, t0=t0))
    try:
        await asyncio.sleep(warm_s)
        await asyncio.to_thread(fault_on)
        t_on = time.perf_counter() - t0
        await asyncio.sleep(max(0.0, warm_s + fault_s - (time.perf_counter() - t0)))
        await asyncio.to_thread(fault_off)
        t_off = time.perf_counter() - t0
    finally:
        lifted.append(time.perf_counter() - t0)
    run = await load
    return run, t_on, t_off


def record(scenario: str, summary: dict) -> None:
    """Print a scenario's figures; with WRITE_RESULTS=1 merge them into bench/results/faults.json."""
    print(f"\n[faults] {scenario}: {json.dumps(summary, sort_keys=True)}")
    if os.environ.get("WRITE_RESULTS") != "1":
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc[scenario] = {**summary, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


# A private redis-server on a free port (tests here break the path to it, never it).
RedisServer = RedisProcess


@pytest.fixture(scope="module")
def fault_triton(triton_runtime: TritonRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of this module's own: tests kill it."""
    log = tmp_path_factory.mktemp("fault-triton") / "triton.log"
    with TritonServer(triton_runtime, models=["clf"], log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    """Start proxies; every one is stopped at the end of the test."""
    made: list[FaultProxy] = []

    def make(target: str | tuple[str, int], name: str = "proxy") -> FaultProxy:
        p = FaultProxy(target, name=name).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def start_gateway(triton_urls: list[str], tmp: Path, *, args: list[str] = (),  # type: ignore[assignment]
                  env: dict[str, str] | None = None) -> GatewayProcess:
    first, *rest = triton_urls
    extra = [a for u in rest for a in ("--triton-url", u)]
    gw = GatewayProcess(first, args=[*extra, "--log-level", "info", *args],
                        env=private_env(**(env or {})), log_path=tmp / f"gateway-{uuid.uuid4().hex[:6]}.log")
    return gw.start()
