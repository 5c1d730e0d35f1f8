"""Start a peer serving the demo model: its own venv (made on first use), its model dir, its process.

    python -m bench.peers.launch mlserver|kserve [--port P]   # serve until Ctrl-C (a manual check)

Each peer's venv lives under the git-ignored `.peers/<name>-<version>/`, created from the package
index on first use with pinned versions and marked ready by a stamp file holding the
requirements (a changed pin rebuilds it). Its model dir (under the caller's work dir) gets the
demo model's version-1 weights and `clf_forward.py`, the same numpy forward Triton runs.
Their best settings on this kind of machine (shared/FACTS.md): MLServer with
`parallel_workers: 0` (its default of 1 is 2-3x slower), no debug access log, no metrics
server, no gzip middleware; KServe with one uvicorn worker, its access and latency log lines
off (~33 % of its CPU), no gRPC server. Both answer KServe v2 JSON at `/v2/models/clf/infer`.
"""

from __future__ import annotations

import argparse
import json
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

from runtime.triton import DEFAULT_REPOSITORY, ROOT, free_port

PEERS_DIR = ROOT / ".peers"
HERE = Path(__file__).resolve().parent
MODEL_PATH = "/v2/models/clf/infer"
_STAMP = ".infergate-peer-ready"


class PeerError(RuntimeError):
    """A peer's venv could not be built, or the peer did not start or serve."""


@dataclass(frozen=True)
class PeerSpec:
    name: str                     # "mlserver", "kserve"
    requirements: tuple[str, ...]
    label: str                    # what the results call it

    @property
    def venv(self) -> Path:
        pin = self.requirements[0].split("==")[-1]
        return PEERS_DIR / f"{self.name}-{pin}"

    @property
    def target(self) -> str:
        return f"peer_{self.name}"


PEERS: dict[str, PeerSpec] = {
    "mlserver": PeerSpec("mlserver", ("mlserver==1.7.1",),
                         "Seldon MLServer 1.7.1 (parallel_workers 0, no access log, metrics or gzip)"),
    "kserve": PeerSpec("kserve", ("kserve==0.21.0",),
                       "KServe 0.21.0 Python model server (1 worker, no access/latency log, no gRPC)"),
}


def ensure_venv(spec: PeerSpec, log_path: Path | None = None, quiet: bool = True) -> Path:
    """The peer's venv, built (once) with its pinned requirements; returns its python."""
    python = spec.venv / "bin" / "python"
    stamp = spec.venv / _STAMP
    wanted = "\n".join(spec.requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[peers] building {spec.venv} ({' '.join(spec.requirements)}; a few minutes, once)",
          file=sys.stderr, flush=True)
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab") if log_path else (subprocess.DEVNULL if quiet else None)
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(spec.venv)], check=True, stdout=out, stderr=subprocess.STDOUT)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *spec.requirements], check=True, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerError(f"could not build {spec.venv}: {exc} (log: {log_path})") from exc
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    stamp.write_text(wanted)
    return python


def _listening(port: int) -> bool:
    """A listener on 127.0.0.1/0.0.0.0:port, read from /proc (connecting to a port nobody
    listens on yet can self-connect inside the ephemeral range and then block the server)."""
    hex_port = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(cols[1].endswith(hex_port) and cols[3] == "0A" for cols in (ln.split() for ln in lines)):
            return True
    return False


@dataclass
class PeerServer:
    """One peer process serving `clf` (version-1 weights) on 127.0.0.1:port."""

    spec: PeerSpec
    workdir: Path
    log_path: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # The peer runs from its model dir: every path it is given must be absolute.
        self.workdir = Path(self.workdir).resolve()
        self.log_path = Path(self.log_path).resolve() if self.log_path else None

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.process else "stopped"
        return f"<PeerServer {self.spec.name} {self.url} [{state}]>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def infer_url(self) -> str:
        return self.url + MODEL_PATH

    def _model_dir(self) -> Path:
        d = self.workdir / self.spec.name
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEFAULT_REPOSITORY / "clf" / "1" / "weights.npz", d / "weights.npz")
        shutil.copyfile(HERE / "clf_forward.py", d / "clf_forward.py")
        return d

    def command(self, python: Path, d: Path) -> list[str]:
        if self.spec.name == "mlserver":
            shutil.copyfile(HERE / "mlserver_runtime.py", d / "mlserver_runtime.py")
            (d / "settings.json").write_text(json.dumps({
                "host": "127.0.0.1", "http_port": self.port, "grpc_port": free_port(),
                "metrics_port": free_port(), "parallel_workers": 0, "debug": False,
                "metrics_endpoint": None, "gzip_enabled": False, "load_models_at_startup": True}))
            (d / "model-settings.json").write_text(json.dumps({
                "name": "clf", "implementation": "mlserver_runtime.ClfModel",
                "parameters": {"uri": str(d / "weights.npz"), "version": "1"}}))
            return [str(python.parent / "mlserver"), "start", str(d)]
        shutil.copyfile(HERE / "kserve_server.py", d / "kserve_server.py")
        return [str(python), str(d / "kserve_server.py"), "--http_port", str(self.port),
                "--weights", str(d / "weights.npz"), "--workers", "1", "--event-loop", "uvloop"]

    def start(self, timeout: float = 120.0) -> "PeerServer":
        python = ensure_venv(self.spec, self.workdir / f"{self.spec.name}-install.log")
        d = self._model_dir()
        cmd = self.command(python, d)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        for var in ("PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
            env.pop(var, None)
        try:
            self.process = subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerError(f"{self.spec.name} exited with {self.process.returncode}; log: {self.log_path}")
            if _listening(self.port) and self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise PeerError(f"{self.spec.name} not ready after {timeout}s; log: {self.log_path}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/clf/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def infer(self, x: list[list[float]]) -> list[float]:
        """One KServe v2 JSON request; the flat PROBS data."""
        body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [len(x), len(x[0])],
                            "data": [v for row in x for v in row]}]}
        req = urllib.request.Request(self.infer_url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
        return next(o for o in doc["outputs"] if o["name"] == "PROBS")["data"]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID; SIGKILL its process group if it lingers (workers, helpers)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def __enter__(self) -> "PeerServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("--port", type=int)
    a = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"infergate-peer-{a.peer}-"))
    server = PeerServer(PEERS[a.peer], workdir, workdir / "server.log", **({"port": a.port} if a.port else {}))
    try:
        server.start()
    except PeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{server.spec.label} at {server.infer_url} (log {server.log_path}); Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
