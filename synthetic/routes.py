"""The gateway extension: ``POST /v1/synthetic/{dataset}`` and ``GET /v1/synthetic``.

Mount with ``python -m gateway --extension synthetic.routes:extension`` (or
``INFERGATE_EXTENSIONS=synthetic.routes:extension``). At start-up the factory loads the
``published`` version of every ``synthetic-*`` model in the MLflow registry
(``INFERGATE_MLFLOW_URI``); publishing a new version takes effect at the next start.

Sampling is numpy work (~0.2 s for 100k rows on one core), so it never runs on the event loop:
each request runs sample + encode in a worker thread, at most ``INFERGATE_SYNTHETIC_CONCURRENCY``
at once (beyond that: 429 at once), under a deadline of ``INFERGATE_SYNTHETIC_TIMEOUT_S``
(503 ``deadline_exceeded``; the thread finishes its bounded batch and its result is dropped).
Rows per request are bounded by ``INFERGATE_SYNTHETIC_MAX_ROWS`` (default 100000).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors as E
from gateway.extensions import Extension
from synthetic.encode import ARROW_TYPE, MAX_ROWS, RequestError, parse_request, to_arrow, to_json
from synthetic.sampler import Sampler

__all__ = ["extension", "build", "Served"]

log = logging.getLogger("infergate.synthetic")
_MAX_BODY = 4096


@dataclass(frozen=True, eq=False)
class Served:
    dataset: str
    version: int | None
    sampler: Sampler
    summary: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"<Served {self.dataset} v{self.version}>"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    value = default if raw is None else int(raw)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def load_published(uri: str | None = None) -> dict[str, Served]:
    from synthetic.store import PUBLISHED, Store

    store = Store(uri)
    out = {}
    for info in store.published():
        _, sampler = store.sampler(info.dataset, alias=PUBLISHED)
        out[info.dataset] = Served(info.dataset, info.version, sampler, info.summary())
        log.info("synthetic: serving %s version %d", info.dataset, info.version)
    return out


def build(served: Mapping[str, Served], *, max_rows: int = MAX_ROWS, concurrency: int = 2,
          timeout_s: float = 10.0) -> Extension:
    """The extension over already-loaded samplers (the factory below loads them from MLflow)."""
    state: dict[str, asyncio.Semaphore | None] = {"slots": None}  # made on the serving loop
    listing = {"datasets": [{**s.summary, "columns": list(s.sampler.columns)} for s in served.values()],
               "max_rows": max_rows}

    def work(s: Served, rows: int, seed: int, fmt: str) -> tuple[bytes, str]:
        data = s.sampler.sample(rows, seed)
        if fmt == "arrow":
            meta = {"dataset": s.dataset, "version": str(s.version), "seed": str(seed)}
            return to_arrow(s.sampler.columns, data, meta), ARROW_TYPE
        return to_json(s.dataset, s.version, seed, s.sampler.columns, data), "application/json"

    async def sample(request: Request) -> Response:
        dataset = request.path_params["dataset"]
        s = served.get(dataset)
        if s is None:
            raise E.NotFound(f"dataset: {dataset!r} is not published here")
        ctype = request.headers.get("content-type")
        if ctype is not None and not ctype.startswith("application/json"):
            raise E.UnsupportedMediaType("/v1/synthetic takes application/json")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                raise E.PayloadTooLarge(f"body: more than {_MAX_BODY} bytes")
        try:
            req = parse_request(body, max_rows)
        except RequestError as exc:
            raise E.InvalidField(exc.field, exc.problem) from None
        if state["slots"] is None:
            state["slots"] = asyncio.Semaphore(concurrency)
        slots: asyncio.Semaphore = state["slots"]
        if slots.locked():
            raise E.Overloaded(f"{concurrency} synthetic samples already in progress")
        t0 = time.perf_counter()
        await slots.acquire()  # free: checked above, no await in between
        job = asyncio.ensure_future(asyncio.to_thread(work, s, req.rows, req.seed, req.format))
        # The slot is held until the thread ends, even when the request gave up on it first.
        job.add_done_callback(_release(slots))
        try:
            out, media = await asyncio.wait_for(asyncio.shield(job), timeout_s)
        except asyncio.TimeoutError:
            raise E.DeadlineExceeded(f"sampling {req.rows} rows took over {timeout_s} s") from None
        except Exception:
            log.exception("synthetic: sampling %s failed", dataset)
            raise E.GatewayError("internal error") from None
        return Response(out, media_type=media, headers={
            "x-synthetic-version": str(s.version), "x-synthetic-rows": str(req.rows),
            "server-timing": f"sample;dur={(time.perf_counter() - t0) * 1e3:.1f}"})

    async def index(request: Request) -> Response:
        return Response(orjson.dumps(listing), media_type="application/json")

    routes = [Route("/v1/synthetic", index, methods=["GET"]),
              Route("/v1/synthetic/{dataset}", sample, methods=["POST"])]
    return Extension("synthetic", routes, _openapi(max_rows), ("synthetic",))


def _release(slots: asyncio.Semaphore):
    def done(job: asyncio.Future) -> None:
        slots.release()
        if not job.cancelled():
            job.exception()  # retrieved: a dropped job's error is not logged as "never retrieved"
    return done


def extension(config: Any = None, environ: Mapping[str, str] | None = None) -> Extension:
    """Factory for ``--extension synthetic.routes:extension``."""
    env = os.environ if environ is None else environ
    served = load_published(env.get("INFERGATE_MLFLOW_URI"))
    return build(served, max_rows=_env_int(env, "INFERGATE_SYNTHETIC_MAX_ROWS", MAX_ROWS),
                 concurrency=_env_int(env, "INFERGATE_SYNTHETIC_CONCURRENCY", 2),
                 timeout_s=float(_env_int(env, "INFERGATE_SYNTHETIC_TIMEOUT_S", 10)))


def _openapi(max_rows: int) -> dict[str, Any]:
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "/v1/synthetic": {"get": {
            "operationId": "listSynthetic", "tags": ["synthetic"],
            "summary": "Published synthetic datasets with their version and quality summary",
            "responses": {"200": {"description": "datasets", "content": {"application/json": {"schema": {
                "type": "object", "required": ["datasets", "max_rows"],
                "properties": {"datasets": {"type": "array", "items": {"type": "object"}},
                               "max_rows": {"type": "integer"}}}}}}}}},
        "/v1/synthetic/{dataset}": {"post": {
            "operationId": "sampleSynthetic", "tags": ["synthetic"],
            "summary": "Sample rows; the same seed gives the same rows",
            "parameters": [{"name": "dataset", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["rows"], "additionalProperties": False,
                "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": max_rows},
                               "seed": {"type": "integer", "minimum": 0, "default": 0},
                               "format": {"type": "string", "enum": ["json", "arrow"], "default": "json"}}}}}},
            "responses": {
                "200": {"description": "rows: column-oriented JSON (null = missing) or an Arrow IPC stream",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    ARROW_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
                "400": {"description": "a field is missing or invalid (named in the message)", **err},
                "404": {"description": "dataset not published here", **err},
                "413": {"description": "body too large", **err},
                "415": {"description": "not application/json", **err},
                "429": {"description": "too many samples in progress", **err},
                "503": {"description": "sampling missed its deadline", **err}}}},
    }
