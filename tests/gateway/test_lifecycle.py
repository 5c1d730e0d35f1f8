"""Admin plane on its own port, and graceful shutdown under load."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import numpy as np

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


async def test_sigterm_answers_every_request_in_flight(triton: TritonServer, tmp_path: Path) -> None:
    gw = GatewayProcess(triton.grpc_url, args=["--features", "off"], env=gateway_env(),
                        log_path=tmp_path / "gw.log").start()
    x = np.zeros(20).tolist()
    async with httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
        sends = [asyncio.ensure_future(client.post("/v1/infer", json={"model": "clf", "unit_id": f"s{i}",
                                                                        "inputs": x})) for i in range(200)]
        await asyncio.sleep(0.02)      # let the requests reach the gateway
        gw.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*sends, return_exceptions=True)
    code = await asyncio.to_thread(gw.process.wait, 15)
    answered = [r for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, httpx.ConnectError)]
    # Requests that reached the gateway are answered 200; ones sent after it stopped
    # listening are refused at connect time (the client knows nothing was processed).
    assert len(answered) + len(refused) == 200, [type(r) for r in results if not isinstance(r, httpx.Response)]
    assert answered and all(r.status_code == 200 for r in answered)
    assert code in (0, -signal.SIGTERM)
    gw.process = None
