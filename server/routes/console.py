"""The console: `/console`, a page the gateway serves itself (no Node build, no CDN).

Owns: serving the console's three files (`server/static/console/`: index.html,
console.css, console.js, shipped as package data) with headers that keep the page to
itself: a Content-Security-Policy allowing only this origin's script, style and API
calls (no inline script, no third-party anything), no framing, no referrer. The page
holds the caller's key in `sessionStorage` and sends it as a Bearer header; the server
never sets a cookie and never sees the key in a URL. Everything the console shows comes
from the documented API (`/v1/me`, `/v1/usage/series`, `/v1/requests`, `/v1/admin/*`,
`/v1/jobs`, `/v1/models`, `/v1/responses/stream`).
"""

from __future__ import annotations

from importlib import resources

from quart import Response
from quart_trio import QuartTrio

from core.errors import NotFound
from server.services import Services

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data: blob:; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


def _asset(name: str) -> Response:
    if name not in _FILES:
        raise NotFound(f"No console file '{name}'")
    body = resources.files("server").joinpath("static", "console", name).read_bytes()
    return Response(body, content_type=_FILES[name], headers=_HEADERS)


def register(app: QuartTrio, services: Services) -> None:
    del services  # the page is static; it calls the API with the user's key

    @app.get("/console")
    async def console_page() -> Response:
        return _asset("index.html")

    @app.get("/console/<name>")
    async def console_file(name: str) -> Response:
        return _asset(name)
