"""The experiments console: a static page (HTML + JS + CSS, no build step) served on the
admin listener at ``/console``.

The files are read once, when the routes are made. The page itself holds no data and needs no
token; everything it shows comes from the admin API with the bearer token the experimenter
types in (kept in the tab's ``sessionStorage`` only). A strict Content-Security-Policy allows
nothing but this origin's own script, style and API: no inline script, no other host.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["console_routes", "CSP"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer", "cache-control": "no-store", "x-frame-options": "DENY"}
_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


def console_routes() -> list[Route]:
    here = files(__name__)
    body = {name: (here / name).read_bytes() for name in _FILES}

    def static(name: str):
        async def endpoint(request: Request) -> Response:
            return Response(body[name], media_type=_FILES[name], headers=_HEADERS)
        return endpoint

    return [Route("/console", static("index.html"), methods=["GET"]),
            Route("/console/app.js", static("app.js"), methods=["GET"]),
            Route("/console/app.css", static("app.css"), methods=["GET"]),
            Route("/console/favicon.svg", static("favicon.svg"), methods=["GET"])]
