"""`python -m gateway --workers 2`: two processes on one port, metrics summed, one supervisor."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import psutil
import pytest

from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import gateway_env

TOKEN = "workers-t0ken"
_X = np.linspace(-1, 1, 20, dtype=np.float32).tolist()


def _workers(gw: GatewayProcess) -> list[psutil.Process]:
    assert gw.process is not None
    workers = []
    for p in psutil.Process(gw.process.pid).children():  # the workers and multiprocessing's resource tracker
        try:
            if any("spawn_main" in a for a in p.cmdline()):
                workers.append(p)
        except psutil.Error:  # exited (a zombie until the supervisor reaps it)
            pass
    return workers


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _ready_everywhere(gw: GatewayProcess, n: int = 40) -> bool:
    """``n`` fresh connections (spread over the workers by the kernel) all answer ready."""
    try:
        return all(httpx.get(f"{gw.url}/v2/health/ready", timeout=2).status_code == 200 for _ in range(n))
    except httpx.HTTPError:
        return False


def _requests_total(gw: GatewayProcess) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text  # a fresh connection: any worker
    return sum(float(v) for v in re.findall(r"^infergate_requests_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def two_workers(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int]]:
    admin_port = free_port()
    env = {**gateway_env(), "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN}"}
    log = tmp_path_factory.mktemp("workers") / "gw.log"
    with GatewayProcess(triton.grpc_url, args=["--features", "off", "--workers", "2", "--admin-port", str(admin_port),
                                               "--log-level", "info"], env=env, log_path=log) as gw:
        _wait_for(lambda: len(_workers(gw)) == 2 and _ready_everywhere(gw), 60, "two ready workers")
        yield gw, admin_port


def _served_by(metrics_dir: str, pid: int, tmp: Path) -> float:
    """One worker's own request count, read from its file alone."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    own = tmp / str(pid)
    own.mkdir(parents=True)
    shutil.copy(Path(metrics_dir) / f"counter_{pid}.db", own)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(own))
    return sum(s.value for m in registry.collect() if m.name == "infergate_requests"
               for s in m.samples if s.name == "infergate_requests_total")


def test_both_workers_serve_and_a_scrape_counts_every_request(two_workers, tmp_path: Path) -> None:
    gw, _ = two_workers
    workers = _workers(gw)
    metrics_dir = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
    before = _requests_total(gw)
    own_before = {p.pid: _served_by(metrics_dir, p.pid, tmp_path / "before") for p in workers}
    n = 60
    for i in range(n):  # a new connection each: SO_REUSEPORT picks the worker
        with httpx.Client(base_url=gw.url) as client:
            r = client.post("/v1/infer", json={"model": "clf", "unit_id": f"w{i}", "inputs": _X})
            assert r.status_code == 200, r.text
    own = {p.pid: _served_by(metrics_dir, p.pid, tmp_path / "after") - own_before[p.pid] for p in workers}
    assert sum(own.values()) == n and all(own.values()), own  # both served (all on one: p = 2^-59)
    totals = [_requests_total(gw) - before for _ in range(12)]  # each scrape answered by either worker
    assert totals == [n] * 12, totals
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'pid="' not in text  # every gauge says how workers combine: one series, not one per worker
    assert len(re.findall(r"^infergate_in_flight_requests ", text, re.M)) == 1


def test_an_admin_change_reaches_every_worker(two_workers) -> None:
    gw, admin_port = two_workers
    admin = f"http://127.0.0.1:{admin_port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    current = httpx.get(f"{admin}/admin/experiments/clf-demo", headers=auth).json()
    config = current["config"]
    config["variants"][0]["weight"], config["variants"][1]["weight"] = 0, 100
    r = httpx.put(f"{admin}/admin/experiments/clf-demo", json=config, headers=auth)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    only = config["variants"][1]["name"]

    def everywhere() -> bool:  # fresh connections: both workers must have applied it
        answers = [httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": f"a{i}", "inputs": _X})
                   for i in range(30)]
        states = [httpx.get(f"{admin}/admin/experiments/clf-demo", headers=auth).json()["version"]
                  for _ in range(10)]
        return {a.json()["variant"] for a in answers} == {only} and set(states) == {version}

    _wait_for(everywhere, 5, "a worker kept the old weights")
    text = httpx.get(f"{gw.url}/metrics").text  # both workers set it: one series, the latest value
    assert re.findall(r'^router_config_version\{experiment="clf-demo"\} (\S+)$', text, re.M) == [f"{version:.1f}"]


def test_a_killed_worker_is_replaced(two_workers) -> None:
    gw, _ = two_workers
    victim, survivor = _workers(gw)
    victim.kill()
    _wait_for(lambda: len(_workers(gw)) == 2 and victim.pid not in {p.pid for p in _workers(gw)}
              and _ready_everywhere(gw), 60, "no replacement worker")
    assert survivor.is_running()
    r = httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": "after", "inputs": _X})
    assert r.status_code == 200


def test_sigterm_stops_every_worker_and_cleans_the_metrics_dir(triton: TritonServer, tmp_path: Path) -> None:
    gw = GatewayProcess(triton.grpc_url, args=["--features", "off", "--workers", "2"], env=gateway_env(),
                        log_path=tmp_path / "gw.log").start()
    _wait_for(lambda: len(_workers(gw)) == 2, 30, "two workers")
    workers = _workers(gw)
    env = psutil.Process(workers[0].pid).environ()
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    _wait_for(lambda: any(name.endswith(".db") for name in os.listdir(metrics_dir)), 30, "no metric files")
    assert gw.process is not None
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(20) == 0
    gw.process = None
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
    assert not os.path.exists(metrics_dir)


def test_a_worker_that_cannot_start_stops_the_supervisor(triton: TritonServer, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:  # bound without SO_REUSEPORT: no worker can listen here
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "gateway", "--workers", "2", "--port", str(port),
                               "--features", "off", "--triton-url", triton.grpc_url],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **gateway_env()})
    assert proc.returncode != 0
    assert "Address already in use" in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 30


def test_one_gateway_ignores_an_inherited_prometheus_multiproc_dir(triton: TritonServer, tmp_path: Path) -> None:
    """Feast sets PROMETHEUS_MULTIPROC_DIR when imported, so a parent that imported it passes
    it on: a single gateway keeps its metrics in memory all the same, and its scrape counts."""
    stray = tmp_path / "stray"
    stray.mkdir()
    env = {**gateway_env(), "PROMETHEUS_MULTIPROC_DIR": str(stray)}
    with GatewayProcess(triton.grpc_url, args=["--features", "off"], env=env, log_path=tmp_path / "gw.log") as gw:
        before = _requests_total(gw)
        for i in range(5):
            assert httpx.post(f"{gw.url}/v1/infer", json={"model": "clf", "unit_id": f"s{i}", "inputs": _X}).status_code == 200
        assert _requests_total(gw) - before == 5
    assert list(stray.iterdir()) == []
