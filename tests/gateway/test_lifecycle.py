"""Admin plane on its own port, and graceful shutdown under load."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env


def test_admin_routes_live_only_on_the_admin_port(triton: TritonServer, tmp_path: Path) -> None:
    admin_port = free_port()
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": "ops:s3cret-token"}
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--admin-port", str(admin_port)],
                        env=env, log_path=tmp_path / "gw.log") as gw:
        auth = {"authorization": "Bearer s3cret-token"}
        assert httpx.get(f"{gw.url}/admin/experiments", headers=auth).status_code == 404
        admin = f"http://127.0.0.1:{admin_port}"
        assert httpx.get(f"{admin}/admin/experiments").status_code == 401
        r = httpx.get(f"{admin}/admin/experiments", headers=auth)
        assert r.status_code == 200 and r.json()["experiments"][0]["name"] == "clf-demo"
        assert httpx.post(f"{admin}/v1/infer", json={}).status_code == 404
    assert "s3cret-token" not in (tmp_path / "gw.log").read_text()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_answers_every_request_in_flight(triton: TritonServer, tmp_path: Path, workers: int) -> None:
    """SIGTERM while 50 requests wait on a slow Triton (a latency proxy in front of the real
    one): the gateway (or, with `--workers 2`, the supervisor, which forwards it to both
    workers) stops listening, answers all 50 with 200, then exits 0."""
    from faults.proxy import FaultProxy

    with FaultProxy(("127.0.0.1", triton.grpc_port), name="slow-triton") as proxy:
        # With workers the in-flight gauge is sampled each second, so every request must stay
        # inside for several seconds: a 3 s round trip (1.5 s each way), with up to 8 Triton
        # calls in flight per target so that each request waits one round trip, not a queue of them.
        extra = [] if workers == 1 else ["--workers", str(workers), "--max-in-flight-batches", "8"]
        gw = GatewayProcess(proxy.address, args=["--features", "off", "--log-level", "info", *extra],
                            env=gateway_env(), log_path=tmp_path / "gw.log").start()
        for _ in range(600):   # every worker started (not just the one that answered first)
            if (tmp_path / "gw.log").read_text().count("gateway ready:") >= workers:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the workers did not all start")
        proxy.latency(0.3 if workers == 1 else 1.5)
        x = np.zeros(20).tolist()
        async with httpx.AsyncClient(base_url=gw.url, timeout=10,
                                     limits=httpx.Limits(max_connections=60)) as client:
            # A generous deadline: with one Triton call in flight per variant, the slow calls
            # queue behind each other; this test is about shutdown, not deadlines.
            sends = [asyncio.ensure_future(client.post("/v1/infer", json={
                "model": "clf", "unit_id": f"s{i}", "inputs": x}, headers={"x-request-timeout-ms": "8000"}))
                for i in range(50)]
            async with httpx.AsyncClient(base_url=gw.url) as probe:
                # Until all 50 are inside the gateway (with workers, the gauge is sampled each second).
                seen = []
                for _ in range(100 if workers == 1 else 400):
                    text = (await probe.get("/metrics")).text
                    m = re.search(r"^infergate_in_flight_requests (\S+)$", text, re.M)
                    seen.append(float(m.group(1)) if m else None)
                    if m and float(m.group(1)) >= 50:
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"the 50 requests never got in flight together: {seen[::10]} "
                                         f"done {sum(s.done() for s in sends)}")
            assert not any(s.done() for s in sends)   # all 50 still in flight at SIGTERM
            gw.process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*sends, return_exceptions=True)
        code = await asyncio.to_thread(gw.process.wait, 15)
        gw.process = None
    assert [getattr(r, "status_code", r) for r in results] == [200] * 50
    assert code == 0, (code, (tmp_path / "gw.log").read_text()[-2000:])
