"""The admin API from the command line's side (``python -m router list|show|...``): stdlib
HTTP only, so the CLI starts fast and needs nothing the router does not.

Failures are two kinds, as the CLI's exit codes: ``Unreachable`` (no answer, a 5xx: exit 1) and
``Refused`` (a 4xx with the gateway's ``{"error", "message"}``: exit 2).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

__all__ = ["AdminClient", "Refused", "Unreachable", "token_from_env", "DEFAULT_GATEWAY"]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class Unreachable(Exception):
    """The gateway did not answer, or answered 5xx (store down, starting)."""


class Refused(Exception):
    """A 4xx: ``code`` is the gateway's stable error code, ``doc`` its whole body."""

    def __init__(self, status: int, doc: Mapping[str, Any]) -> None:
        self.status, self.doc = status, dict(doc)
        self.code = str(doc.get("error", f"http_{status}"))
        super().__init__(f"{self.code}: {doc.get('message', '')}")


def token_from_env(environ: Mapping[str, str], token_id: str | None = None) -> str:
    """The first token of ``INFERGATE_ADMIN_TOKENS`` (``id:token,...``), or the one named."""
    tokens: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in environ.get("INFERGATE_ADMIN_TOKENS", "").split(","))):
        tid, sep, token = item.partition(":")
        if not sep or not tid or not token:
            raise ValueError("INFERGATE_ADMIN_TOKENS: entries must look like id:token")
        tokens[tid] = token
    if not tokens:
        raise ValueError("INFERGATE_ADMIN_TOKENS is not set (id:token,...): the admin API needs a token")
    if token_id is not None:
        if token_id not in tokens:
            raise ValueError(f"--token-id: {token_id!r} is not in INFERGATE_ADMIN_TOKENS")
        return tokens[token_id]
    return next(iter(tokens.values()))


class AdminClient:
    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout_s

    def __repr__(self) -> str:
        return f"<AdminClient {self.url}>"

    def request(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        h = {"authorization": f"Bearer {self._token}", "accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["content-type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"error": f"http_{e.code}", "message": raw[:200].decode("latin-1")}
            if not isinstance(doc, dict):
                doc = {"error": f"http_{e.code}", "message": str(doc)}
            if e.code >= 500:
                raise Unreachable(f"{self.url}: {e.code} {doc.get('error')}: {doc.get('message')}") from None
            raise Refused(e.code, doc) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"{self.url}: {reason}") from None

    @staticmethod
    def path(name: str, rest: str = "") -> str:
        return "/admin/experiments/" + urllib.parse.quote(name, safe="") + rest

    def experiments(self) -> list[dict[str, Any]]:
        return self.request("GET", "/admin/experiments")["experiments"]

    def show(self, name: str) -> dict[str, Any]:
        return self.request("GET", self.path(name))

    def history(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return self.request("GET", self.path(name, f"/history?limit={limit}"))["history"]

    def preview(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self.path(name, "/preview"), config)

    def put(self, name: str, config: dict[str, Any], version: int, reason: str | None = None) -> dict[str, Any]:
        headers = {"if-match": str(version)}
        if reason:
            headers["x-change-reason"] = reason
        return self.request("PUT", self.path(name), config, headers)
