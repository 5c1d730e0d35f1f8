"""The gateway's ordinary (non-hot) routes: health, KServe v2 metadata, metrics, admin."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors as E
from gateway.metrics import CONTENT_TYPE_LATEST, exposition
from httpcommon.errors import response

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.unexpected import UnexpectedErrors

SERVER_NAME = "infergate"
SERVER_VERSION = "0.1.0"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def make_routes(gw: "Gateway") -> list[BaseRoute]:
    c = gw.components

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        ok = c.ready and await c.pool.any_ready()
        return _json({"ready": ok}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return _json({"name": SERVER_NAME, "version": SERVER_VERSION,
                      "extensions": ["binary_tensor_data", "parameters"]})

    def _spec(model: str):
        codec = c.v2.get(model)
        if codec is None:
            raise E.UnknownModel(f"model {model!r} is not served here")
        return codec

    async def model_metadata(request: Request) -> Response:
        model = request.path_params["model"]
        codec = _spec(model)
        exp = next((e for e in c.routes.router.experiments().values() if e.config.model == model), None)
        spec, pm = codec.spec, codec.public
        return _json({
            "name": model, "platform": SERVER_NAME,
            "versions": sorted({t.version for t in exp.targets()}) if exp else [],
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape(spec.batchable)}
                       for t in spec.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape(spec.batchable)}
                        for t in spec.outputs],
            "parameters": {"experiment": exp.config.name if exp else "default",
                           "entity_keys": list(codec.entity_keys),
                           # The columns a one-input model's caller sends with an entity.
                           "request_width": (pm.request_dims(spec.inputs[0], True) or (None,))[0]
                           if spec.simple else None,
                           "max_batch_size": spec.max_batch_size,
                           "feature_join": ({"input": pm.join.input, "mode": pm.join.mode,
                                             "width": pm.join.width} if pm.join else None)},
        })

    async def repository_index(request: Request) -> Response:
        """Triton's `POST /v2/repository/index` shape, for what this gateway routes: every
        model Triton holds, with the route the gateway gives it (an experiment, `default`
        for the latest version, or none when the model is only an experiment's target)."""
        routed = {e.config.model: e.config.name for e in c.routes.router.experiments().values()}
        routed.update({m: "default" for m in c.defaults})
        index = await c.pool.repository_index()
        rows = [{**m, "route": routed.get(m["name"])} for m in index]
        known = {m["name"] for m in index}
        rows += [{"name": m, "version": "", "state": "READY", "reason": "", "route": e}
                 for m, e in routed.items() if m not in known and m in c.v2]
        return _json(rows)

    async def model_ready(request: Request) -> Response:
        model = request.path_params["model"]
        _spec(model)
        exp = next((e for e in c.routes.router.experiments().values() if e.config.model == model), None)
        targets = exp.targets() if exp else ({c.defaults[model].target} if model in c.defaults else set())
        ok = c.ready and all([await c.pool.model_ready(t.model, t.version) for t in targets])
        return _json({"name": model, "ready": ok}, 200 if ok else 503)

    async def openapi(request: Request) -> Response:
        from gateway.openapi import openapi_document
        doc = openapi_document()
        if gw.extensions:  # a copy: the cached document is shared
            doc = {**doc, "paths": {**doc["paths"], **{p: v for x in gw.extensions for p, v in x.openapi_paths.items()}},
                   "tags": doc["tags"] + [{"name": t} for x in gw.extensions for t in x.openapi_tags]}
        return _json(doc)

    async def outcomes(request: Request) -> Response:
        """Outcomes for the prediction log (gateway/predlog.py): 202 once Redis has them."""
        from gateway.predlog import parse_outcomes
        if c.predlog is None:
            raise E.Unavailable("the prediction log is off on this gateway (or it is starting)")
        if "json" not in request.headers.get("content-type", "application/json"):
            raise E.UnsupportedMediaType("content-type: outcomes are JSON")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > gw.config.max_body_bytes:
                raise E.PayloadTooLarge(f"body: over {gw.config.max_body_bytes} bytes")
        try:
            items = parse_outcomes(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise E.InvalidJSON(f"body is not valid JSON: {exc}") from None
        except ValueError as exc:
            field, _, what = str(exc).partition(": ")
            raise E.InvalidField(field, what) from None
        try:
            await c.predlog.add_outcomes(items)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: the caller retries
            return response("store_unavailable", f"outcomes not stored: Redis: {exc}")
        return _json({"accepted": len(items)}, 202)

    async def metrics(request: Request) -> Response:
        return Response(exposition(c.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/outcomes", outcomes, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    if gw.config.admin_port is None:
        routes.extend(admin_routes(gw))
    return routes


def admin_routes(gw: "Gateway") -> list[BaseRoute]:
    """The router's admin API, bound lazily: the service exists only after start-up."""
    from router.admin import admin_routes as router_admin_routes
    from router.admin import authenticate
    from router.console import console_routes

    def guarded(view: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if authenticate(request.headers.get("authorization"), gw.config.admin_tokens) is None:
                return response("unauthorized", "a valid bearer token is required")
            if gw.components.pool is None:
                raise E.Unavailable("the gateway is starting")
            return _json(view())
        return endpoint

    def triton() -> dict:
        """The Triton replicas this gateway sends to (for registry/: where to load models)."""
        c = gw.components
        return {"replicas": [{"url": r.backend.url, "up": r.healthy} for r in c.pool.replicas],
                "model_repository": gw.config.model_repository}

    def targets() -> dict:
        """Every model:version batcher held, with its queued rows and calls in flight."""
        return {"targets": gw.components.target_states()}

    class _Lazy:
        def __getattr__(self, name: str) -> Any:
            if gw.components.routes is None:
                raise E.Unavailable("the gateway is starting")
            return getattr(gw.components.routes, name)

    async def series(request: Request) -> Response:
        """Per-variant figures of the last seconds, sampled each second in this process."""
        if authenticate(request.headers.get("authorization"), gw.config.admin_tokens) is None:
            return response("unauthorized", "a valid bearer token is required")
        if gw.series is None or gw.components.routes is None:
            raise E.Unavailable("the gateway is starting")
        name = request.path_params["name"]
        try:
            seconds = min(gw.series.seconds, max(1, int(request.query_params.get("seconds", "300"))))
            window = min(seconds, max(1, int(request.query_params.get("window", "60"))))
        except ValueError:
            return response("invalid_limit", "seconds and window must be integers")
        if gw.components.routes.router.experiment(name) is None:
            return response("not_found", f"no live experiment {name!r}")
        return _json(series_document(name, gw.series, seconds, window))

    return [Route("/admin/triton", guarded(triton), methods=["GET"]),
            Route("/admin/targets", guarded(targets), methods=["GET"]),
            Route("/admin/experiments/{name}/series", series, methods=["GET"]),
            *router_admin_routes(_Lazy()),  # type: ignore[arg-type]
            *console_routes()]


def series_document(name: str, series: Any, seconds: int, window: int) -> dict[str, Any]:
    """The series route's answer: one point per second per variant, and a summary over the
    last ``window`` seconds (requests, req/s, share of requests, p50/p99, errors by reason)."""
    from router.outcomes import quantile_ms
    pts = series.points(name, seconds)
    out_points = []
    totals: dict[str, dict[str, Any]] = {}
    cutoff = len(pts) - window
    for i, (t, point) in enumerate(pts):
        row = {}
        for v, f in point.items():
            row[v] = {"rps": f["requests"] / series.interval_s, "p50_ms": quantile_ms(f["latency"], 0.5),
                      "p99_ms": quantile_ms(f["latency"], 0.99), "errors": f["errors"]}
            if i >= cutoff:
                tot = totals.setdefault(v, {"requests": 0, "errors": {}, "latency": {}})
                tot["requests"] += f["requests"]
                for code, n in f["errors"].items():
                    tot["errors"][code] = tot["errors"].get(code, 0) + n
                for k, n in f["latency"].items():
                    tot["latency"][k] = tot["latency"].get(k, 0) + n
        out_points.append({"t": t, "variants": row})
    span = min(window, len(pts)) * series.interval_s
    all_requests = sum(t["requests"] for t in totals.values())
    summary = {v: {"requests": t["requests"], "rps": t["requests"] / span if span else 0.0,
                   "share": t["requests"] / all_requests if all_requests else None,
                   "p50_ms": quantile_ms(t["latency"], 0.5), "p99_ms": quantile_ms(t["latency"], 0.99),
                   "errors": t["errors"]} for v, t in totals.items()}
    return {"experiment": name, "interval_s": series.interval_s, "seconds": seconds,
            "process": os.getpid(), "points": out_points,
            "summary": {"window_s": span, "variants": summary}}


# Starlette's own refusals (no route; a route without this method, `Allow` set by Starlette),
# in our codes: the hot routes' 405 is rendered by the same `httpcommon.errors.render`.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def exception_handlers(unexpected: "UnexpectedErrors") -> dict[Any, Any]:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, E.GatewayError)
        unexpected.report(exc, request.url.path)
        return response(exc.code, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "bad_request")
        return response(code, str(exc.detail), getattr(exc, "headers", None))

    async def internal(request: Request, exc: Exception) -> Response:
        unexpected.report(exc, request.url.path)
        return response("internal", "internal error")

    return {E.GatewayError: gateway_error, HTTPException: http_error, Exception: internal}
