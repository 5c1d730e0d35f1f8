"""The served HTTP front (granian RSGI, gateway/rsgi.py) on a real gateway and Triton: what
differs from the ASGI side (bodies without a length, the bridge to the Starlette routes,
static files, HEAD, a taken port, a client that leaves mid-body)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from router.console import __file__ as console_init
from runtime.stack import ROOT, GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env

BODY = orjson.dumps({"model": "clf", "unit_id": "u-1", "inputs": [0.1] * 20})


@pytest.fixture(scope="module")
def gw(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("gw-rsgi")
    admin_port = free_port()
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": "ops:rsgi-token", "INFERGATE_MAX_BODY_BYTES": "4096"}
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--admin-port", str(admin_port)],
                        env=env, log_path=tmp / "gw.log") as g:
        g.admin_url = f"http://127.0.0.1:{admin_port}"   # type: ignore[attr-defined]
        g.log = tmp / "gw.log"                            # type: ignore[attr-defined]
        yield g


def _raw(port: int, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            head, _, rest = out.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                    return out


def _chunked(body: bytes, size: int = 100) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_and_answered(gw: GatewayProcess) -> None:
    req = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + _chunked(BODY))
    out = _raw(gw.port, req)
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    assert orjson.loads(out.partition(b"\r\n\r\n")[2])["model"] == "clf"


def test_a_chunked_body_over_the_limit_gets_413_json(gw: GatewayProcess) -> None:
    big = b'{"model": "clf", "inputs": [' + b"0.1, " * 2000 + b"0.1]}"
    req = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + _chunked(big, 1000))
    out = _raw(gw.port, req)
    assert out.startswith(b"HTTP/1.1 413"), out[:300]
    assert orjson.loads(out.partition(b"\r\n\r\n")[2])["error"] == "payload_too_large"


def test_a_declared_length_over_the_limit_is_refused_before_the_body(gw: GatewayProcess) -> None:
    req = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: 1000000\r\nconnection: close\r\n\r\n")
    out = _raw(gw.port, req)   # the body is never sent: the answer must not wait for it
    assert out.startswith(b"HTTP/1.1 413"), out[:300]


def test_get_on_an_inference_route_is_405_with_allow(gw: GatewayProcess) -> None:
    r = httpx.get(f"{gw.url}/v1/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"] == "method_not_allowed"


def test_bridged_routes_answer_as_on_asgi(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{gw.url}/v2/models/clf")
    assert meta.status_code == 200 and meta.json()["name"] == "clf"
    assert httpx.get(f"{gw.url}/no/such/route").status_code == 404
    head = httpx.head(f"{gw.url}/v2/health/ready")
    assert head.status_code == 200 and head.content == b""
    metrics = httpx.get(f"{gw.url}/metrics")
    assert metrics.status_code == 200 and "infergate_admission_limit" in metrics.text
    # Query strings and percent-encoded paths reach the Starlette routes decoded.
    assert httpx.get(f"{gw.url}/v2/models/cl%66").json()["name"] == "clf"


def test_the_console_static_files_come_whole_from_the_admin_listener(gw: GatewayProcess) -> None:
    js = httpx.get(f"{gw.admin_url}/console/app.js")   # type: ignore[attr-defined]
    assert js.status_code == 200
    assert js.content == (Path(console_init).parent / "app.js").read_bytes()
    r = httpx.get(f"{gw.admin_url}/admin/experiments", headers={"authorization": "Bearer rsgi-token"})  # type: ignore[attr-defined]
    assert r.status_code == 200


def test_a_client_that_leaves_mid_body_costs_nothing(gw: GatewayProcess) -> None:
    for _ in range(20):
        _raw(gw.port, b"POST /v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 500\r\n\r\n" + BODY[:40], read=False)
    time.sleep(0.5)
    r = httpx.post(f"{gw.url}/v1/infer", content=BODY, headers={"content-type": "application/json"})
    assert r.status_code == 200
    text = httpx.get(f"{gw.url}/metrics").text
    assert "infergate_in_flight_requests 0.0" in text
    assert "Traceback" not in gw.log.read_text()   # type: ignore[attr-defined]


def test_a_taken_port_ends_the_gateway_with_the_reason(triton: TritonServer, tmp_path: Path) -> None:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)   # even one that shares ports
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port),
                               "--triton-url", triton.grpc_url, "--features", "off"],
                              cwd=ROOT, env={**os.environ, **gateway_env()}, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
