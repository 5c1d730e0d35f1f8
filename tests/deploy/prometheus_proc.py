"""A throwaway Prometheus (Debian's binary) on a free port, with its own config and data dir."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from runtime.triton import free_port


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, without connecting (no TCP self-connect)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    return bool(out.strip())


class PrometheusProcess:
    def __init__(self, binary: str, workdir: Path, config: dict[str, Any], rules: dict[str, Any]) -> None:
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump({**config, "rule_files": [str(workdir / "rules.yaml")]}))
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"<PrometheusProcess {self.url} [{'running' if self.proc else 'stopped'}]>"

    def start(self, timeout_s: float = 30.0) -> "PrometheusProcess":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if listening(self.port):
                try:
                    if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]

    def __enter__(self) -> "PrometheusProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
