"""A simulated client for the rollout: users of the accepted feature table send requests, and
report an outcome for each answer (value 1 when the predicted segment is the generator's
label for that user, else 0) by ``POST /v1/outcomes``, in batches."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np


class Traffic:
    def __init__(self, gateway: str, table: Path, model: str, rps: float, *, users: int = 2000,
                 seed: int = 5, batch_every_s: float = 0.5) -> None:
        import pandas as pd

        from features.repo.datagen import FEATURE_NAMES, segment_label
        from runtime.modelgen import REQUEST_WIDTH
        frame = pd.read_parquet(table)
        latest = frame.sort_values("event_timestamp").groupby("user_id").tail(1)
        labels = segment_label(frame)[latest.index.to_numpy()]
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(latest), size=min(users, len(latest)), replace=False)
        self._ids = latest["user_id"].to_numpy()[pick]
        x = latest[list(FEATURE_NAMES)].to_numpy(np.float32)[pick]
        noise = rng.standard_normal((len(pick), REQUEST_WIDTH)).astype(np.float32)
        self._x = np.nan_to_num(np.concatenate([x, noise], axis=1), nan=0.0)
        self._y = labels[pick]
        self._url = f"{gateway.rstrip('/')}/v2/models/{model}/infer"
        self._outcomes_url = f"{gateway.rstrip('/')}/v1/outcomes"
        self._rps, self._every = rps, batch_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = rng
        self.sent = self.answered = self.errors = self.outcomes = self.outcome_errors = 0
        self.tag = uuid.uuid4().hex[:8]

    def __enter__(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, name="pipelines-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "errors": self.errors,
                "outcomes": self.outcomes, "outcome_errors": self.outcome_errors, "rps": self._rps}

    def _run(self) -> None:
        import httpx
        pending: list[dict] = []
        last_flush = time.monotonic()
        gap = 1.0 / self._rps
        nxt = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                i = int(self._rng.integers(len(self._ids)))
                rid = f"{self.tag}-{self.sent}"
                self.sent += 1
                body = {"id": rid, "parameters": {"unit_id": str(int(self._ids[i]))},
                        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, self._x.shape[1]],
                                    "data": self._x[i].tolist()}]}
                try:
                    r = client.post(self._url, json=body)
                    if r.status_code == 200:
                        probs = r.json()["outputs"][0]["data"]
                        self.answered += 1
                        pending.append({"request_id": rid,
                                        "value": 1.0 if int(np.argmax(probs)) == int(self._y[i]) else 0.0})
                    else:
                        self.errors += 1
                except httpx.HTTPError:
                    self.errors += 1
                now = time.monotonic()
                if pending and (now - last_flush >= self._every or len(pending) >= 500):
                    self._flush(client, pending)
                    pending, last_flush = [], now
                nxt += gap
                delay = nxt - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    nxt = time.monotonic()
            if pending:
                self._flush(client, pending)

    def _flush(self, client: Any, items: list[dict]) -> None:
        import httpx
        try:
            r = client.post(self._outcomes_url, json={"outcomes": items})
            if r.status_code == 202:
                self.outcomes += len(items)
            else:
                self.outcome_errors += len(items)
        except httpx.HTTPError:
            self.outcome_errors += len(items)
