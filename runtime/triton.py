"""Triton runtime manager: one way to prepare, start and stop a real `tritonserver`.

Used by the test fixture, `make demo` and `make serve`. Triton's python backend needs
numpy < 2 while the gateway (Feast) needs numpy >= 2, so Triton runs from its own venv
holding `nvidia-pytriton==0.7.0`, whose wheel bundles the `tritonserver` 2.51 binary.
The facts behind every flag below are in DEVELOPERS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PYTRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy<2")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".triton-venv"
DEFAULT_REPOSITORY = ROOT / "model_repo"
SHM_DIR = Path("/dev/shm")


class TritonStartError(RuntimeError):
    """Triton could not be prepared, did not become ready, or refused a model."""


@dataclass(frozen=True)
class TritonRuntime:
    """A prepared runtime venv: where the binary, its libraries and backends are."""

    venv: Path
    site_packages: Path
    binary: Path
    backends: Path
    lib_path: str

    @classmethod
    def ensure(cls, venv: Path | str = DEFAULT_VENV, *, quiet: bool = True) -> "TritonRuntime":
        """Create the runtime venv once (idempotent, guarded by a stamp file) and describe it."""
        venv = Path(os.environ.get("TRITON_VENV", venv)).resolve()
        stamp = venv / ".infergate-ready"
        wanted = "\n".join(PYTRITON_REQUIREMENTS)
        if not stamp.exists() or stamp.read_text() != wanted:
            _build_venv(venv, quiet=quiet)
            stamp.write_text(wanted)
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / f"python{ver}" / "site-packages"
        pkg = site / "pytriton" / "tritonserver"
        backends = venv / "backends"
        if not (backends / "python" / "triton_python_backend_stub").exists():
            # The python backend looks for its stub next to itself; the wheel ships one per Python.
            shutil.rmtree(backends, ignore_errors=True)
            shutil.copytree(pkg / "backends", backends)
            shutil.copy2(pkg / "python_backend_stubs" / ver / "triton_python_backend_stub",
                         backends / "python" / "triton_python_backend_stub")
        # LIBDIR first: otherwise the stub may load Debian's libpython against pyenv's stdlib.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        lib_path = os.pathsep.join(p for p in (libdir, str(site / "nvidia_pytriton.libs")) if p)
        return cls(venv, site, pkg / "bin" / "tritonserver", backends, lib_path)


def _build_venv(venv: Path, *, quiet: bool) -> None:
    out = subprocess.DEVNULL if quiet else None
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, stdout=out)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if quiet:
            pip.append("-q")
        subprocess.run([*pip, *PYTRITON_REQUIREMENTS], check=True, stdout=out)
    except subprocess.CalledProcessError as exc:
        raise TritonStartError(f"could not build Triton's runtime venv at {venv}: {exc}") from exc


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one this process handed out before: the kernel
    may give the same free port to two binds in a row (seen: Triton's HTTP and gRPC ports
    drawn equal, and Triton refusing to start)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


@dataclass
class TritonServer:
    """One `tritonserver` process in explicit model-control mode on 127.0.0.1.

    >>> with TritonServer(TritonRuntime.ensure(), models=["clf"]) as triton:
    ...     triton.grpc_url   # "127.0.0.1:PORT"
    """

    runtime: TritonRuntime
    models: Sequence[str] = ()
    repository: Path = DEFAULT_REPOSITORY
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    shm_prefix: str = field(default_factory=lambda: f"infergate_{uuid.uuid4().hex[:10]}_")
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.process else "stopped"
        return f"<TritonServer grpc={self.grpc_url} http={self.http_url} [{state}]>"

    def command(self) -> list[str]:
        return [
            str(self.runtime.binary),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={self.runtime.backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--model-control-mode=explicit",
            "--log-verbose=0", "--exit-timeout-secs=3",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (self.runtime.lib_path, env.get("LD_LIBRARY_PATH", "")) if p)
        # The stub imports numpy from whatever python is first on PATH: the runtime venv's.
        env["PATH"] = f"{self.runtime.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        return env

    def start(self, timeout: float = 120.0) -> "TritonServer":
        if self.process is not None:
            raise TritonStartError("already started")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        try:
            self._wait_ready(timeout)
            for model in self.models:
                self.load(model)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with {self.process.returncode}; log: {self.log_path}")
            if self._http("GET", "/v2/health/live", timeout=1.0) == 200:
                return
            time.sleep(0.05)
        raise TritonStartError(f"tritonserver not live after {timeout}s; log: {self.log_path}")

    def load(self, model: str, config: dict | None = None, timeout: float = 60.0) -> None:
        body = {"parameters": {"config": json.dumps(config)}} if config else {}
        status = self._http("POST", f"/v2/repository/models/{model}/load", body, timeout=timeout)
        if status != 200:
            raise TritonStartError(f"loading model {model!r} failed with HTTP {status}")

    def unload(self, model: str, timeout: float = 60.0) -> None:
        self._http("POST", f"/v2/repository/models/{model}/unload", {}, timeout=timeout)

    def is_ready(self) -> bool:
        return self._http("GET", "/v2/health/ready", timeout=1.0) == 200

    def _http(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> int:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, SIGKILL the process group if it lingers, then remove shm files."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stubs left behind by an abnormal exit
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for path in SHM_DIR.glob(f"{self.shm_prefix}*"):
            path.unlink(missing_ok=True)

    def kill(self) -> None:
        """Simulate a crash (kill -9 of the server only), for fault tests."""
        if self.process is not None:
            self.process.kill()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m runtime.triton`: build (once) and describe Triton's runtime venv."""
    rt = TritonRuntime.ensure(quiet=False)
    print(f"triton runtime ready: {rt.binary} (venv {rt.venv})")


if __name__ == "__main__":
    main()
