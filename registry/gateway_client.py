"""The gateway's admin API as the registry uses it (the only module that talks HTTP to it).

The token comes from `INFERGATE_ADMIN_TOKENS` (`id:token,...`, the variable the gateway
reads); the first entry is used unless a token id is named. Transport failures become
`GatewayUnavailable`; a refused change keeps the gateway's `{"error", "message"}`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import httpx

from registry.errors import BadInput, GatewayUnavailable, LifecycleError, NotFound

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class GatewayRefused(BadInput):
    """The admin API answered 4xx: `code` is its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"gateway refused ({status} {code}): {message}")
        self.status, self.code = status, code


class VersionConflict(LifecycleError):
    """Someone else changed the experiment between our read and our write (409)."""


def token_from_env(environ: Mapping[str, str] | None = None, token_id: str | None = None) -> str:
    from router.admin import tokens_from_env
    from router.errors import ConfigError
    try:
        tokens = tokens_from_env(os.environ if environ is None else environ)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    if not tokens:
        raise BadInput("INFERGATE_ADMIN_TOKENS is not set (id:token,...): the admin API needs a token")
    if token_id is not None:
        if token_id not in tokens:
            raise BadInput(f"--token-id: {token_id!r} is not in INFERGATE_ADMIN_TOKENS")
        return tokens[token_id]
    return next(iter(tokens.values()))


class GatewayAdmin:
    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s,
                                  headers={"authorization": f"Bearer {token}"})

    def __repr__(self) -> str:
        return f"<GatewayAdmin {self.url}>"

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"gateway {self.url}{path}: {type(exc).__name__}: {exc}") from None
        if resp.status_code < 300:
            return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        try:
            doc = resp.json()
            code, message = doc.get("error", "http_error"), doc.get("message", resp.text)
        except ValueError:
            code, message = "http_error", resp.text[:300]
        if resp.status_code == 404:
            raise NotFound(f"gateway {path}: {message}")
        if resp.status_code == 409 and code == "version_conflict":
            raise VersionConflict(f"gateway {path}: {message}")
        if resp.status_code >= 500:
            raise GatewayUnavailable(f"gateway {path}: {resp.status_code} {code}: {message}")
        raise GatewayRefused(resp.status_code, code, message)

    def triton(self) -> dict[str, Any]:
        return self._request("GET", "/admin/triton")

    def targets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/admin/targets")["targets"]

    def experiment(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/admin/experiments/{name}")

    def experiments(self) -> list[dict[str, Any]]:
        return self._request("GET", "/admin/experiments")["experiments"]

    def history(self, name: str, limit: int = 10) -> list[dict[str, Any]]:
        return self._request("GET", f"/admin/experiments/{name}/history", params={"limit": limit})["history"]

    def put_experiment(self, name: str, config: dict[str, Any], reason: str,
                       if_match: int | None = None) -> dict[str, Any]:
        headers = {"x-change-reason": reason}
        if if_match is not None:
            headers["if-match"] = str(if_match)
        return self._request("PUT", f"/admin/experiments/{name}", json=config, headers=headers)

    def metrics(self) -> str:
        return self._request("GET", "/metrics")
