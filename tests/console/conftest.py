"""A real stack for the console tests: the session's Triton, two gateway processes sharing one
Redis key prefix (the first with its admin API on a separate listener, as in production), and
Debian's headless Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import redis
import yaml

from runtime.modelgen import INPUT_WIDTH
from runtime.stack import GatewayProcess
from runtime.triton import TritonServer, free_port
from tests.conftest import missing, require

TOKEN = "console-t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EXPERIMENT = "clf-console"
CHROMIUM = Path("/usr/lib/chromium/chromium")
# shared/FACTS.md: Debian's chromium under Playwright, nothing fetched, no sandbox as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def experiment_config(salt: str) -> dict[str, Any]:
    return {"name": EXPERIMENT, "model": "clf", "salt": salt, "control": "a",
            "variants": [{"name": "a", "weight": 50, "target": {"model": "clf", "version": "1"}},
                         {"name": "b", "weight": 50, "target": {"model": "clf", "version": "2"}}]}


class Stack:
    def __init__(self, gw1: GatewayProcess, gw2: GatewayProcess, admin_port: int, prefix: str,
                 salt: str, tmp: Path) -> None:
        self.gw1, self.gw2, self.prefix, self.salt, self.tmp = gw1, gw2, prefix, salt, tmp
        self.admin = f"http://127.0.0.1:{admin_port}"   # gw1's admin listener
        self.admin2 = gw2.url                             # gw2 serves /admin on its main port

    def state(self, url: str | None = None, name: str = EXPERIMENT) -> dict[str, Any]:
        r = httpx.get(f"{url or self.admin}/admin/experiments/{name}", headers=AUTH, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def console_stack(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except Exception as e:
        missing(f"Redis not reachable at 127.0.0.1:6379: {e}")
    tmp = tmp_path_factory.mktemp("console")
    prefix = f"console:test-{uuid.uuid4().hex[:8]}:"
    salt = f"console-{uuid.uuid4().hex[:6]}"
    exp_file = tmp / "experiments.yaml"
    exp_file.write_text(yaml.safe_dump({"experiments": [experiment_config(salt)]}))
    env = {"INFERGATE_REDIS_KEY_PREFIX": prefix, "INFERGATE_ADMIN_TOKENS": f"ops:{TOKEN},ci:other-t0ken"}
    base = ["--features", "off", "--experiments-file", str(exp_file)]
    admin_port = free_port()
    gw1 = GatewayProcess(triton.grpc_url, args=[*base, "--admin-port", str(admin_port)], env=env,
                         log_path=tmp / "gateway-1.log")
    gw2 = GatewayProcess(triton.grpc_url, args=base, env=env, log_path=tmp / "gateway-2.log")
    try:
        gw1.start()
        gw2.start()
        yield Stack(gw1, gw2, admin_port, prefix, salt, tmp)
    finally:
        gw1.stop()
        gw2.stop()
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def infer(client: httpx.Client, url: str, unit: str, row: list[float]) -> dict[str, Any]:
    r = client.post(f"{url}/v1/infer", json={"model": "clf", "unit_id": unit, "inputs": row}, timeout=5)
    r.raise_for_status()
    return r.json()


class Load:
    """Closed-loop clients in threads, each request a new unit id; counts what was answered."""

    def __init__(self, url: str, threads: int = 2, prefix: str = "load") -> None:
        self.url, self.threads, self.prefix = url, threads, prefix
        self.sent = 0
        self.answered = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.rows = np.random.default_rng(1).standard_normal((64, INPUT_WIDTH)).astype(np.float32).tolist()

    def _run(self, k: int) -> None:
        with httpx.Client() as c:
            i = 0
            while not self._stop.is_set():
                unit = f"{self.prefix}-{k}-{i}"
                try:
                    r = c.post(f"{self.url}/v1/infer", json={"model": "clf", "unit_id": unit,
                                                             "inputs": self.rows[i % 64]}, timeout=5)
                    with self._lock:
                        self.answered += 1
                        self.sent += r.status_code == 200
                except httpx.HTTPError:
                    pass
                i += 1

    def __enter__(self) -> "Load":
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Module scope, not session: Playwright's sync API keeps an asyncio loop running in this
    thread while it is open, and the async tests of later modules could not start theirs."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    require(CHROMIUM.exists(), f"{CHROMIUM} missing: `make chromium` (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots() -> Path | None:
    """INFERGATE_SCREENSHOTS=DIR saves the main views there (docs/console/ is made this way)."""
    d = os.environ.get("INFERGATE_SCREENSHOTS")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def wait_for(pred, timeout: float, interval: float = 0.02) -> float:
    """Seconds until ``pred()`` was true; AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(interval)
