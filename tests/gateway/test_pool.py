"""Triton replicas: a dead replica is routed around, ejected and reported."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import numpy as np

from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env


async def test_a_dead_replica_costs_no_request(triton: TritonServer, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"   # nothing listens there: connection refused
    args = ["--features", "off", "--triton-url", dead, "--triton-url", triton.grpc_url]
    gw = GatewayProcess(triton.grpc_url, args=args, env=gateway_env(), log_path=tmp_path / "gw.log")
    # GatewayProcess puts its own --triton-url first; the list is [live, dead, live]: fine,
    # what matters is that the dead one is in the rotation.
    with gw:
        x = np.zeros(20).tolist()
        async with httpx.AsyncClient(base_url=gw.url) as client:
            rs = await asyncio.gather(*(client.post("/v1/infer", json={"model": "clf", "unit_id": f"p{i}",
                                                                        "inputs": x}) for i in range(200)))
            assert [r.status_code for r in rs] == [200] * 200
            await asyncio.sleep(1.0)   # two health-check rounds
            text = (await client.get("/metrics")).text
    up = dict(re.findall(r'^infergate_triton_replica_up\{replica="([^"]+)"\} (\S+)$', text, re.M))
    assert up[dead] == "0.0" and up[triton.grpc_url] == "1.0"


async def test_ejection_and_readmission_asserted_on_the_pool(triton: TritonServer) -> None:
    """`gateway/pool.py` directly, against the real Triton and a fault proxy in front of it:
    `eject_after` failed calls in a row eject a replica (its calls go to the other one, retried
    within the budget), the ejection ends after `base_ejection_s` and the replica takes traffic
    again, a second ejection lasts twice as long, and the health check marks a refusing replica
    down and, once it answers, up again with its ejection history forgotten."""
    from faults.proxy import FaultProxy
    from prometheus_client import CollectorRegistry

    from gateway.pool import ReplicaPool

    registry = CollectorRegistry()
    x = {"INPUT": np.zeros((1, 20), dtype=np.float32)}
    with FaultProxy(("127.0.0.1", triton.grpc_port), name="flaky-triton") as proxy:
        pool = ReplicaPool([proxy.address, triton.grpc_url], registry, eject_after=3, base_ejection_s=0.6,
                           health_interval_s=0.1)
        flaky, steady = pool.replicas
        try:
            infer = pool.make_infer(await pool.model_spec("clf"), "1")
            await infer(x, 2.0)

            proxy.reset()
            for _ in range(8):   # round robin: the flaky replica is tried first every other call
                assert (await infer(x, 2.0))["PROBS"].shape == (1, 4)   # retried on the steady one
            t_ejected = time.monotonic()
            assert flaky.ejections == 1 and not flaky.available(t_ejected), flaky
            assert steady.available(t_ejected) and steady.ejections == 0
            assert registry.get_sample_value("infergate_triton_ejections_total",
                                             {"replica": proxy.address}) == 1.0
            retries = registry.get_sample_value("infergate_triton_retries_total")
            assert retries == 3
            for _ in range(6):   # while ejected, nobody tries it: no more retries
                await infer(x, 2.0)
            assert registry.get_sample_value("infergate_triton_retries_total") == retries

            proxy.pass_through()
            await asyncio.sleep(max(0.0, flaky.ejected_until - time.monotonic()) + 0.05)
            while not await flaky.backend.is_ready(0.5):   # the channel reconnects (≤ 1 s backoff)
                await asyncio.sleep(0.05)
            before = proxy.stats["bytes_up"]
            for _ in range(6):
                await infer(x, 2.0)
            assert proxy.stats["bytes_up"] > before, "the re-admitted replica took no traffic"
            assert flaky.failures == 0 and flaky.available(time.monotonic())

            proxy.reset()
            for _ in range(8):
                await infer(x, 2.0)
            assert flaky.ejections == 2
            assert flaky.ejected_until - time.monotonic() > 0.6   # 1.2 s: doubled

            pool.start()   # the active health check: down while refused, up (history reset) after
            proxy.refuse()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if not flaky.healthy:
                    break
            assert not flaky.healthy
            assert registry.get_sample_value("infergate_triton_replica_up", {"replica": proxy.address}) == 0
            proxy.pass_through()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if flaky.healthy:
                    break
            assert flaky.healthy and flaky.ejections == 0 and flaky.available(time.monotonic())
            assert registry.get_sample_value("infergate_triton_replica_up", {"replica": proxy.address}) == 1
        finally:
            await pool.close()
