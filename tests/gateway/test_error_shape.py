"""Every error of a live gateway has the one shape, from the one renderer: the hot routes' 405
and Starlette's 405/404, the admin API's 413, the data plane's 503s (with `Retry-After`); and
the override header honours a Bearer token whatever the scheme's case."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from runtime.stack import GatewayProcess
from runtime.triton import TritonServer
from tests.conftest import gateway_env

TOKEN = "shape-t0ken"
X = np.zeros(20).tolist()


@pytest.fixture(scope="module")
def gw(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gw-shape") / "gateway.log"
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"}
    with GatewayProcess(triton.grpc_url, args=["--features", "off"], env=env, log_path=Path(log)) as g:
        yield g


def _shape(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code and body["message"]


def test_405_and_404_look_the_same_from_every_route(gw: GatewayProcess) -> None:
    hot = httpx.get(f"{gw.url}/v1/infer")             # the raw ASGI fast path
    cold = httpx.post(f"{gw.url}/v2/health/live")      # a Starlette route
    admin = httpx.delete(f"{gw.url}/admin/experiments")  # the admin API's routes
    for r in (hot, cold, admin):
        _shape(r, 405, "method_not_allowed")
        assert r.headers.get("allow")
    _shape(httpx.get(f"{gw.url}/nowhere"), 404, "not_found")
    _shape(httpx.post(f"{gw.url}/v1/infer", json={"model": "nope", "unit_id": "u", "inputs": X}),
           404, "model_not_found")


def test_admin_413_is_payload_too_large(gw: GatewayProcess) -> None:
    r = httpx.put(f"{gw.url}/admin/experiments/clf-demo", content=b" " * ((1 << 20) + 1),
                  headers={"authorization": f"Bearer {TOKEN}"})
    _shape(r, 413, "payload_too_large")
    data = httpx.post(f"{gw.url}/v1/infer", content=b" " * ((1 << 20) + 1),
                      headers={"content-type": "application/json"})
    _shape(data, 413, "payload_too_large")


def test_a_503_promises_retry_after(gw: GatewayProcess) -> None:
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "u", "inputs": X},
                   headers={"x-request-timeout-ms": "1"})
    _shape(r, 503, "deadline_exceeded")
    assert r.headers["retry-after"] == "1"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_override_takes_the_bearer_scheme_in_any_case(gw: GatewayProcess, scheme: str) -> None:
    for variant in ("a", "b"):
        r = httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "u-override", "inputs": X},
                       headers={"x-variant-override": variant, "authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 200 and r.json()["variant"] == variant, (scheme, r.text)
