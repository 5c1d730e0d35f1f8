"""What every step shares: its record in the run's task log, and the services it needs.

A step is a plain function wrapped by ``@task("name")``: it appends one JSON line per run to
``<workdir>/tasks.jsonl`` (task, status, seconds, error), so the CLI can print each task's status
and duration and name the failed task with its error, whatever the runner (kfp.local here, a
Kubeflow pod there) did with the traceback. A step that needs MLflow, Redis, Triton or the
gateway calls ``require_*`` first: a missing service fails the step at its start, naming it.
"""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

TASKS = "tasks.jsonl"


class StepFailed(RuntimeError):
    """A step refused to go on (bad input, a failed check, a missing service); the message says why."""


class ServiceMissing(StepFailed):
    pass


def task(name: str) -> Callable[[F], F]:
    """Record the wrapped step's outcome in ``<workdir>/tasks.jsonl`` (first argument: workdir)."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(workdir: str, *args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            rec: dict[str, Any] = {"task": name, "pid": os.getpid()}
            try:
                out = fn(workdir, *args, **kwargs)
            except BaseException as exc:
                rec.update(status="FAILURE", error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, StepFailed)
                           else str(exc), seconds=round(time.monotonic() - t0, 3))
                if not isinstance(exc, StepFailed):
                    rec["traceback"] = traceback.format_exc(limit=8)
                _append(workdir, rec)
                raise
            rec.update(status="SUCCESS", seconds=round(time.monotonic() - t0, 3))
            if isinstance(out, dict):
                rec["result"] = json.loads(json.dumps(out, default=str))
            _append(workdir, rec)
            return out
        return run  # type: ignore[return-value]
    return wrap


def _append(workdir: str, rec: dict[str, Any]) -> None:
    path = Path(workdir) / TASKS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_tasks(workdir: str | Path) -> list[dict[str, Any]]:
    path = Path(workdir) / TASKS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- services --------------------------------------------------------------------------------

def mlflow_uri(workdir: str, uri: str) -> str:
    """The run's MLflow: ``uri``, else an embedded sqlite store in the work dir."""
    return uri or f"sqlite:///{Path(workdir).resolve() / 'mlflow' / 'mlflow.db'}"


def require_mlflow(uri: str) -> None:
    from registry.settings import quiet_mlflow
    quiet_mlflow()
    # models:/ URIs resolve against the process-wide registry URI, not a client's own.
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceMissing(f"MLflow: cannot create {db.parent}: {exc}") from None
        return
    import httpx
    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=3.0).raise_for_status()
    except Exception as exc:  # noqa: BLE001
        raise ServiceMissing(f"MLflow at {uri} unreachable: {type(exc).__name__}: {exc}") from None


def require_redis(url: str) -> None:
    import redis
    try:
        r = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        r.ping()
        r.close()
    except redis.RedisError as exc:
        raise ServiceMissing(f"Redis at {url} unreachable: {exc}") from None


def require_gateway(url: str) -> dict[str, Any]:
    """The gateway answers and every Triton replica behind it is up; returns /admin/triton."""
    import httpx

    from registry.gateway_client import GatewayAdmin, token_from_env
    try:
        httpx.get(url.rstrip("/") + "/v2/health/live", timeout=3.0).raise_for_status()
    except Exception as exc:  # noqa: BLE001
        raise ServiceMissing(f"gateway at {url} unreachable: {type(exc).__name__}: {exc}") from None
    doc = GatewayAdmin(url, token_from_env()).triton()
    down = [r["url"] for r in doc.get("replicas", []) if not r.get("up")]
    if not doc.get("replicas") or down:
        raise ServiceMissing(f"Triton behind {url}: replicas down: {down or 'none configured'}")
    return doc
