"""Triton replicas: a dead replica is routed around, ejected and reported."""

from __future__ import annotations

import asyncio
import re
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
