"""The whole stack as one context manager: Triton, then the gateway in its own process.

Used by `make serve`, `make demo`, the benchmark harness and the end-to-end tests, so
there is one way to start and stop everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from runtime.triton import DEFAULT_REPOSITORY, ROOT, TritonRuntime, TritonServer, TritonStartError, free_port

# What `make serve` and the demos serve: a git-ignored working copy of model_repo/, so versions
# the registry deploys (3, 4, ...) never touch tracked files.
SERVED_REPOSITORY = ROOT / ".served" / "model_repo"


def served_repository(source: Path = DEFAULT_REPOSITORY, dst: Path = SERVED_REPOSITORY) -> Path:
    """Refresh the working copy from `source` (tracked versions and config overwritten);
    versions the registry added are kept."""
    shutil.copytree(source, dst, dirs_exist_ok=True)
    return dst


@dataclass
class GatewayProcess:
    """`python -m gateway` in a subprocess, stopped with SIGTERM (graceful) by PID."""

    triton_grpc: str
    port: int = field(default_factory=free_port)
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    grpc_port: int | None = None   # the KServe v2 gRPC front (--grpc-port); None = off
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str | None:
        return f"127.0.0.1:{self.grpc_port}" if self.grpc_port is not None else None

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.process else "stopped"
        return f"<GatewayProcess {self.url} [{state}]>"

    def start(self, timeout: float = 60.0) -> "GatewayProcess":
        cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port),
               "--triton-url", self.triton_grpc, *self.args]
        if self.grpc_port is not None:
            cmd += ["--grpc-port", str(self.grpc_port)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            # A session of its own: a terminal's Ctrl-C reaches whoever started it (`make serve`
            # stops it in order), not the gateway directly.
            self.process = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **self.env},
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartError(f"gateway exited with {self.process.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TritonStartError(f"gateway not ready after {timeout}s; log: {self.log_path}")

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Stack:
    """Triton + gateway. `log_dir` keeps both logs (a temp dir by default)."""

    gateway_args: Sequence[str] = ()
    gateway_env: dict[str, str] = field(default_factory=dict)
    models: Sequence[str] = ("clf",)
    gateway_port: int | None = None
    gateway_grpc_port: int | None = None   # the gateway's gRPC front; None = off
    repository: Path | None = None   # None: model_repo/ itself; registry deploys need a working copy
    log_dir: Path | None = None
    triton: TritonServer | None = field(default=None, init=False)
    gateway: GatewayProcess | None = field(default=None, init=False)

    def start(self) -> "Stack":
        log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="infergate-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.triton = TritonServer(TritonRuntime.ensure(), models=self.models,
                                   repository=self.repository or DEFAULT_REPOSITORY,
                                   log_path=log_dir / "triton.log").start()
        try:
            # Inference calls over Triton's HTTP port, the rest over gRPC (BENCHMARKS.md: less CPU
            # and latency per call than grpc.aio).
            args = ["--triton-http-url", self.triton.http_url, *self.gateway_args]
            if self.repository is not None:
                args += ["--model-repository", str(self.repository)]
            gw = GatewayProcess(self.triton.grpc_url, args=args, env=self.gateway_env,
                                log_path=log_dir / "gateway.log", grpc_port=self.gateway_grpc_port)
            if self.gateway_port:
                gw.port = self.gateway_port
            self.gateway = gw.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.triton is not None:
            self.triton.stop()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
