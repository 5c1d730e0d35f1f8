"""Small helpers shared by the lifecycle tests: run the CLI in-process, load in a thread."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import numpy as np

TOKEN = f"reg-{uuid.uuid4().hex[:12]}"


def cli(monkeypatch: Any, capsys: Any, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    from registry.cli import main
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def admin(url: str, path: str) -> Any:
    r = httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {TOKEN}"}, timeout=5)
    r.raise_for_status()
    return r.json()


class Load:
    """Requests in a loop from a thread; every answer's status and variant recorded."""

    def __init__(self, url: str, rows: np.ndarray | None = None) -> None:
        self.url = url
        self.statuses: dict[int, int] = {}
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._x = [0.1 * i for i in range(20)]

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self._stop.is_set():
                uid = uuid.uuid4().hex
                try:
                    r = c.post(f"{self.url}/v1/infer", json={"model": "clf", "unit_id": uid, "inputs": self._x})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    self.failures.append(r.text[:200])
                else:
                    v = str(r.json().get("model_version"))
                    self.versions[v] = self.versions.get(v, 0) + 1

    def __enter__(self) -> "Load":
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(10)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=1, default=str)
