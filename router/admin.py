"""Admin HTTP API for experiments (Starlette routes; the gateway mounts them).

* ``PUT  /admin/experiments/{name}``          validate, store in Redis, notify replicas
* ``GET  /admin/experiments``                 live state of every experiment
* ``GET  /admin/experiments/{name}``          live state of one (config, version, SRM)
* ``GET  /admin/experiments/{name}/history``  stored changes, newest first

Every route needs ``Authorization: Bearer <token>``; the token is matched against each
configured token with ``hmac.compare_digest`` and only its *id* is ever recorded. A PUT may
carry ``x-change-reason`` (kept in the history entry) and ``if-match: <version>`` (the
change is stored only if the stored version is still that one). Errors are JSON
``{"error": "<stable_code>", "message": "..."}``: 401 unauthorized, 400 bad config
(``invalid_json``, ``invalid_config``, ``weights_sum``, ``invalid_header``, ...), 404
not_found, 409 model_conflict / version_conflict (with ``current_version``), 503
store_unavailable.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import ConfigError, ModelConflict, StoreUnavailable, VersionConflict

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
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    presented = value.strip().encode()
    found = None
    for token_id, token in tokens.items():
        if hmac.compare_digest(presented, token.encode()) and found is None:
            found = token_id
    return found


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": code, "message": message})


Handler = Callable[[Request, str], Awaitable[Response]]


def admin_routes(service: "RouterService") -> list[Route]:
    """Routes for the admin API bound to one service."""

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token_id = authenticate(request.headers.get("authorization"), service.admin_tokens)
            if token_id is None:
                return _error(401, "unauthorized", "a valid bearer token is required")
            try:
                return await handler(request, token_id)
            except StoreUnavailable as e:
                return _error(503, "store_unavailable", str(e))
        return endpoint

    async def list_experiments(request: Request, token_id: str) -> Response:
        names = sorted(service.router.experiments())
        return _json(200, {"experiments": [service.state(n) for n in names]})

    async def get_experiment(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        state = service.state(name)
        if state is None:
            return _error(404, "not_found", f"no live experiment {name!r}")
        return _json(200, state)

    async def put_experiment(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            return _error(413, "too_large", "config body over 1 MiB")
        try:
            expected = parse_if_match(request.headers.get("if-match"))
        except ValueError:
            return _error(400, "invalid_header", "if-match: must be a stored version number, e.g. 7")
        reason = request.headers.get("x-change-reason")
        if reason is not None and (not reason.strip() or len(reason) > _MAX_REASON):
            return _error(400, "invalid_header", f"x-change-reason: must be 1 to {_MAX_REASON} characters")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return _error(400, "invalid_json", f"body is not JSON: {e}")
        try:
            version = await service.put_experiment(name, body, token_id, reason=reason and reason.strip(),
                                                   expected_version=expected)
        except VersionConflict as e:
            return _json(409, {"error": e.code, "message": e.message, "current_version": e.current})
        except ModelConflict as e:
            return _error(409, e.code, e.message)
        except ConfigError as e:
            return _error(400, e.code, e.message)
        return _json(200, {"experiment": name, "version": version, "state": service.state(name)})

    async def get_history(request: Request, token_id: str) -> Response:
        name = request.path_params["name"]
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return _error(400, "invalid_limit", "limit must be an integer")
        return _json(200, {"experiment": name, "history": await service.history(name, limit)})

    return [
        Route("/admin/experiments", guarded(list_experiments), methods=["GET"]),
        Route("/admin/experiments/{name}", guarded(get_experiment), methods=["GET"]),
        Route("/admin/experiments/{name}", guarded(put_experiment), methods=["PUT"]),
        Route("/admin/experiments/{name}/history", guarded(get_history), methods=["GET"]),
    ]
