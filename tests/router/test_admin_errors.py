"""The admin API's errors come from the same list and renderer as the gateway's: a body over
1 MiB is 413 `payload_too_large` (not a code of its own), a Redis outage is 503
`store_unavailable` with `Retry-After`, and the Bearer scheme is read in any case."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from router import RouterService
from router.admin import admin_routes
from router.config import default_experiments
from redis_proc import RedisProcess

TOKENS = {"ops": "s3cret-ops"}


@pytest.fixture
async def admin(redis_client, prefix, registry):
    svc = RouterService(redis_client, default_experiments(), TOKENS, registry, key_prefix=prefix)
    await svc.start()
    app = Starlette(routes=admin_routes(svc))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        yield client
    await svc.stop()


async def test_too_large_body_is_payload_too_large(admin) -> None:
    r = await admin.put("/admin/experiments/clf-demo", content=b" " * ((1 << 20) + 1),
                        headers={"authorization": "bearer s3cret-ops"})
    assert r.status_code == 413
    assert r.json() == {"error": "payload_too_large", "message": "body: config over 1 MiB"}


async def test_scheme_in_any_case(admin) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = await admin.get("/admin/experiments", headers={"authorization": f"{scheme} s3cret-ops"})
        assert r.status_code == 200, scheme


async def test_store_down_is_503_with_retry_after() -> None:
    redis_server = RedisProcess().start()
    client = aioredis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    svc = RouterService(client, default_experiments(), TOKENS, CollectorRegistry(), key_prefix="t-down:")
    try:
        await svc.start()
        redis_server.stop()
        app = Starlette(routes=admin_routes(svc))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as admin:
            r = await admin.get("/admin/experiments/clf-demo/history",
                                headers={"authorization": "Bearer s3cret-ops"})
        assert r.status_code == 503 and r.json()["error"] == "store_unavailable"
        assert r.headers["retry-after"] == "1"
    finally:
        await svc.stop()
        await client.aclose()
        redis_server.stop()
