"""Admin HTTP API for experiments (Starlette routes; the gateway mounts them).

* ``PUT  /admin/experiments/{name}``          validate, store in Redis, notify replicas
* ``GET  /admin/experiments``                 live state of every experiment
* ``GET  /admin/experiments/{name}``          live state of one (config, version, SRM)
* ``GET  /admin/experiments/{name}/history``  stored changes, newest first
* ``POST /admin/experiments/{name}/preview``  dry run of a PUT: validated, nothing stored;
  answers the buckets (and estimated units) the change would move (``router.preview``)

Every route needs ``Authorization: Bearer <token>`` (scheme in any case: one parser,
``httpcommon.auth``, shared with the gateway's override header); the token is matched against
each configured token with ``hmac.compare_digest`` and only its *id* is ever recorded. Errors
are rendered by ``httpcommon.errors`` like the gateway's, from the same list of codes:
401 unauthorized, 400 bad config (``invalid_json``, ``invalid_config``, ``weights_sum``, ...),
404 not_found, 409 model_conflict / version_conflict (with ``current_version``), 413
payload_too_large, 503 store_unavailable (+ Retry-After), 400 invalid_header. A PUT may carry
``x-change-reason`` (kept in the history entry) and ``if-match: <version>`` (the change is
stored only if the stored version is still that one).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from httpcommon.auth import match_token
from httpcommon.errors import response

from .errors import ConfigError, ModelConflict, StoreUnavailable, VersionConflict
from .preview import moves

if TYPE_CHECKING:
    from .service import RouterService

__all__ = ["admin_routes", "tokens_from_env", "authenticate"]

_MAX_BODY = 1 << 20
_MAX_REASON = 1000


def parse_if_match(value: str | None) -> int | None:
    """``if-match: 7`` or ``"7"`` (an entity tag) -> 7; None when absent; ValueError otherwise."""
    if value is None:
        return None
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        v = v[1:-1]
    if not v.isdigit():
        raise ValueError(value)
    return int(v)


def tokens_from_env(environ: Mapping[str, str], var: str = "INFERGATE_ADMIN_TOKENS") -> dict[str, str]:
    """Parse ``id1:token1,id2:token2`` from the environment into {token id: token}."""
    out = {}
    for item in filter(None, (x.strip() for x in environ.get(var, "").split(","))):
        token_id, sep, token = item.partition(":")
        if not sep or not token_id or not token:
            raise ConfigError(f"{var}: entries must look like id:token", "invalid_tokens")
        out[token_id] = token
    return out


def authenticate(header: str | None, tokens: Mapping[str, str]) -> str | None:
    """The id of the token in a ``Bearer`` header, or None. Compares against every token."""
    return match_token(header, {token_id: token.encode() for token_id, token in tokens.items()})


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(code: str, message: str) -> Response:
    """Status and headers from the one list of codes (``httpcommon.errors.CODES``)."""
    return response(code, message)


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


Handler = Callable[[Request, str], Awaitable[Response]]


def admin_routes(service: "RouterService") -> list[Route]:
    """Routes for the admin API bound to one service."""

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token_id = authenticate(request.headers.get("authorization"), service.admin_tokens)
            if token_id is None:
                return _error("unauthorized", "a valid bearer token is required")
            try:
                return await handler(request, token_id)
            except StoreUnavailable as e:
                return _error("store_unavailable", str(e))
        return endpoint

    async def list_experiments(request: Request, token_id: str) -> Response:
        names = sorted(service.router.experiments())
        return _json(200, {"experiments": [service.state(n) for n in names]})

    async def get_experiment(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        state = service.state(name)
        if state is None:
            return _error("not_found", f"no live experiment {name!r}")
        return _json(200, state)

    async def put_experiment(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            return _error("payload_too_large", "body: config over 1 MiB")
        try:
            expected = parse_if_match(request.headers.get("if-match"))
        except ValueError:
            return _error("invalid_header", "if-match: must be a stored version number, e.g. 7")
        reason = request.headers.get("x-change-reason")
        if reason is not None and (not reason.strip() or len(reason) > _MAX_REASON):
            return _error("invalid_header", f"x-change-reason: must be 1 to {_MAX_REASON} characters")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return _error("invalid_json", f"body is not JSON: {e}")
        try:
            version = await service.put_experiment(name, body, token_id, reason=reason and reason.strip(),
                                                   expected_version=expected)
        except VersionConflict as e:
            return response(e.code, e.message, fields={"current_version": e.current})
        except ModelConflict as e:
            return _error(e.code, e.message)
        except ConfigError as e:
            return _error(e.code, e.message)
        return _json(200, {"experiment": name, "version": version, "state": service.state(name)})

    async def _read_json(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            raise _Refused("payload_too_large", "body: config over 1 MiB")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise _Refused("invalid_json", f"body is not JSON: {e}") from None

    async def preview_experiment(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        try:
            body = await _read_json(request)
            cfg = await service.validate(name, body)
        except _Refused as e:
            return _error(e.code, e.message)
        except (ModelConflict, ConfigError) as e:
            return _error(e.code, e.message)
        exp = service.router.experiment(name)
        state = service.state(name)
        seen = sum(state["units"]["counts"].values()) if state is not None else 0
        # ~10 ms of hashing per variant: off the event loop.
        result = await asyncio.to_thread(moves, exp.config if exp is not None else None, cfg, seen)
        return _json(200, {"experiment": name, "version": service.version(name), **result})

    async def get_history(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return _error("invalid_limit", "limit must be an integer")
        return _json(200, {"experiment": name, "history": await service.history(name, limit)})

    return [
        Route("/admin/experiments", guarded(list_experiments), methods=["GET"]),
        Route("/admin/experiments/{name}", guarded(get_experiment), methods=["GET"]),
        Route("/admin/experiments/{name}", guarded(put_experiment), methods=["PUT"]),
        Route("/admin/experiments/{name}/history", guarded(get_history), methods=["GET"]),
        Route("/admin/experiments/{name}/preview", guarded(preview_experiment), methods=["POST"]),
    ]
