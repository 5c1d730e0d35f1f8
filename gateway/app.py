"""The gateway's ASGI application.

`/v1/infer` and `/v2/models/{model}/infer` are answered by raw ASGI handlers in front of a
Starlette app that serves everything else (health, model metadata, metrics, admin,
OpenAPI) and runs the lifespan that builds `Components`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from gateway import admission as A
from gateway import errors as E
from gateway.asgi import (JSON, OCTETS, ClientGone, Headers, Receive, Reply, Scope, Send, error_reply, read_body,
                          send_reply)
from gateway.codec_v2 import decompress
from gateway.components import Components
from gateway.config import GatewayConfig
from gateway.extensions import load_extensions
from gateway.request import InferRequest
from gateway.series import VariantSeries
from gateway.routes import admin_routes, exception_handlers, make_routes
from httpcommon.auth import match_token

log = logging.getLogger("infergate")
_V2_PREFIX, _V2_SUFFIX = "/v2/models/", "/infer"
_ALLOW_POST = [(b"allow", b"POST")]


def hot_route(path: str) -> tuple[bool, str | None]:
    """(is an inference route, the model of a v2 route): `/v1/infer` or `/v2/models/M/infer`."""
    if path == "/v1/infer":
        return True, None
    if path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX):
        model = path[len(_V2_PREFIX):-len(_V2_SUFFIX)]
        if model and "/" not in model:
            return True, model
    return False, None


def method_not_allowed(path: str) -> Reply:
    return error_reply(E.MethodNotAllowed(f"{path} takes POST"), _ALLOW_POST)


class Gateway:
    """ASGI callable: fast paths for inference, Starlette for the rest."""

    def __init__(self, config: GatewayConfig, registry: CollectorRegistry | None = None, *,
                 router_service: Any | None = None, features: Any | None = None) -> None:
        self.config = config
        self.components = Components(config, registry, router_service=router_service, features=features)
        # The in-flight count and limit live in the admission (gateway/admission.py).
        self.admission = A.build(config, self.components.metrics)
        self._limiter = self.admission.limiter
        self._default_timeout = config.default_timeout_ms / 1e3
        self._max_timeout = config.max_timeout_ms / 1e3
        self._limit = config.max_body_bytes
        self._tokens = {i: t.encode() for i, t in config.admin_tokens.items()}
        # Read at scrape time (sampled each second with --workers): nothing on the request path.
        self.components.metrics.track(self.components.metrics.in_flight, lambda: self._limiter.in_flight)
        self.series: VariantSeries | None = None  # built in the lifespan (needs the router)
        self.extensions = load_extensions(config.extensions, config)
        # The KServe v2 gRPC front (gateway/grpc_front.py), set by gateway.server when
        # `grpc_port` is configured: started after the components, stopped before they drain.
        self.grpc: Any | None = None
        self.app = Starlette(routes=make_routes(self) + [r for x in self.extensions for r in x.routes],
                             lifespan=self._lifespan,
                             exception_handlers=exception_handlers(self.components.unexpected))
        # With `admin_port` set, the admin API lives only on its own listener (no lifespan:
        # it shares the components the main app starts).
        self.admin_app = _logged_once(Starlette(
            routes=admin_routes(self), exception_handlers=exception_handlers(self.components.unexpected)),
            self.components) if config.admin_port is not None else None

    def __repr__(self) -> str:
        return f"<Gateway [in flight {self._limiter.in_flight}] {self.components!r}>"

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.components.start()
        if self.components.pipeline is not None:   # shadow calls are sheddable traffic
            self.components.pipeline.shadow_allowed = self._limiter.shadow_allowed
        # The console's per-variant series: sampled each second, off the request path.
        self.series = VariantSeries(self.components.metrics, self.components.routes)
        sampler = asyncio.ensure_future(self.series.run())
        if self.grpc is not None:
            try:
                await self.grpc.start()
            except BaseException:
                sampler.cancel()
                await self.components.stop()
                raise
        tune_gc(self.config.gc_threshold)
        try:
            yield
        finally:
            if self.grpc is not None:
                await self.grpc.stop(self.config.shutdown_timeout_s)
            sampler.cancel()
            await self.components.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI side (in-process clients, e.g. httpx's ASGI transport in tests); the
        served front is `gateway.http1`, which calls `handle_infer` the same way."""
        if scope["type"] == "http":
            path = scope["path"]
            hot, model = hot_route(path)
            if hot:
                if scope["method"] == "POST":
                    h = Headers(scope["headers"])
                    reply = await self.handle_infer(
                        h, lambda: read_body(receive, self._limit, h.content_length), scope.get("client"), model)
                    if reply is not None:
                        await send_reply(send, reply)
                    return
                return await send_reply(send, method_not_allowed(path))
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not self.components.unexpected.reported(exc):
                raise

    async def handle_infer(self, h: Headers, read: "Callable[[], Awaitable[bytes]] | bytes", client: object,
                           v2_model: str | None) -> Reply | None:
        """One inference request, whatever the front: admission, then the body (`read`: the
        body itself, or a callable whose awaitable gives it or raises `ClientGone` or a
        `GatewayError` such as `PayloadTooLarge`), parse, pipeline, render.
        Returns the reply to send, or None when the client has gone."""
        t0 = time.perf_counter()
        c = self.components
        if not c.ready:
            c.metrics.rejected_by_code["unavailable"].inc()
            return error_reply(E.Unavailable("gateway not ready"))
        # Admission, before the body is read: a refusal is a pre-built reply.
        try:
            timeout = self._timeout(h)
        except E.GatewayError as err:
            c.metrics.rejected_by_code[err.code].inc()
            return error_reply(err)
        adm = self.admission
        refused = adm.admit(adm.priority(h.priority, v2_model), timeout)
        if refused:
            return await adm.refuse(refused, timeout, client)
        ok = False
        try:
            deadline = t0 + timeout
            body = read if read.__class__ is bytes else await read()   # type: ignore[operator]
            if v2_model is None:
                req = self._parse_v1(h, body)
                if h.priority is None and adm.by_model and adm.recheck_model(req.model):
                    raise E.Overloaded("over the gateway's concurrency limit for sheddable traffic")
            else:
                req = self._parse_v2(h, body, v2_model)
            if h.override is not None:
                req.override = h.override.decode("latin-1")
                req.authenticated = self._authenticated(h.authorization)
            res = await c.pipeline.infer(req, deadline)
            ok = True
            if v2_model is None:
                return 200, c.v1.render(req, res), JSON, None
            out, header_len = c.v2[v2_model].render(req, res)
            if header_len is None:
                return 200, out, JSON, None
            return 200, out, OCTETS, [(b"inference-header-content-length", str(header_len).encode())]
        except E.GatewayError as err:
            if err.status < 500 and not isinstance(err, E.Overloaded):
                c.metrics.rejected_by_code[err.code].inc()
            return error_reply(err)
        except ClientGone:
            return None
        except Exception as exc:  # a bug outside the pipeline (a codec, say): logged once, chained
            c.unexpected.report(exc, "/v1/infer" if v2_model is None else f"/v2/models/{v2_model}/infer", v2_model)
            return error_reply(E.Internal(exc))
        finally:
            self._limiter.done(t0, ok)

    def _timeout(self, h: Headers) -> float:
        if h.timeout_ms is None:
            return self._default_timeout
        try:
            ms = int(h.timeout_ms)
        except ValueError as exc:
            raise E.InvalidField("x-request-timeout-ms", "must be an integer") from exc
        if ms <= 0:
            raise E.InvalidField("x-request-timeout-ms", "must be positive")
        return min(ms / 1e3, self._max_timeout)

    def _parse_v1(self, h: Headers, body: bytes) -> InferRequest:
        if h.content_type is not None and not h.content_type.startswith(b"application/json"):
            raise E.UnsupportedMediaType("/v1/infer takes application/json")
        if h.content_encoding is not None:
            body = decompress(body, h.content_encoding.decode("latin-1").strip().lower(), self._limit)
        return self.components.v1.parse(body)

    def _parse_v2(self, h: Headers, body: bytes, model: str) -> InferRequest:
        codec = self.components.v2.get(model)
        if codec is None:
            raise E.UnknownModel(f"model {model!r} is not served here")
        if h.content_encoding is not None:
            body = decompress(body, h.content_encoding.decode("latin-1").strip().lower(), self._limit)
        header_len = None
        if h.header_length is not None:
            try:
                header_len = int(h.header_length)
            except ValueError as exc:
                raise E.InvalidField("inference-header-content-length", "must be an integer") from exc
        unit = h.unit_id.decode("latin-1") if h.unit_id is not None else None
        return codec.parse(model, body, header_len, unit)

    def _authenticated(self, authorization: bytes | None) -> bool:
        """Constant-time check of a bearer token against every admin token (the admin API's
        parser: `httpcommon.auth`)."""
        return match_token(authorization, self._tokens) is not None


def _logged_once(app: Starlette, c: Components) -> Any:
    """Starlette re-raises what its 500 handler answered (the server would log it a second time):
    swallow it when our handler has logged it."""
    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            if not c.unexpected.reported(exc):
                raise
    return asgi


def tune_gc(threshold: int) -> None:
    """Once started: everything built at start-up (Feast, pandas, pyarrow, grpc modules: ~10^6
    objects) lives as long as the process, so it is moved out of the collector's reach (each
    full collection paused the event loop for tens of milliseconds under load); then the young
    generation is collected every `threshold` allocations instead of every 700, so that
    requests (whose objects die young, by reference count) seldom pay a collection. 0 keeps
    Python's threshold."""
    gc.collect()
    gc.freeze()
    if threshold <= 0:
        return
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)
    log.debug("gc: %d objects frozen, threshold %s", gc.get_freeze_count(), gc.get_threshold())


def create_app(config: GatewayConfig | None = None, **kwargs: Any) -> Gateway:
    return Gateway(config or GatewayConfig.from_env(), **kwargs)
