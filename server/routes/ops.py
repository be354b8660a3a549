"""Operations routes: `/healthz`, `/readyz`, `/openapi.json` and `/docs`.

Owns: what load balancers and people poke at. `/healthz` says the process is up (no
auth, no I/O); `/readyz` checks storage and says whether the gateway is draining (503
with status "draining" from the first moment of a shutdown, before the listener closes,
so balancers stop sending; see `server/serve.py`); `/openapi.json` is the API description
(`server/openapi.py`); `/docs` renders it as a plain HTML page with no external assets.
"""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_trio import QuartTrio

from server.docs_page import render_docs_page
from server.http import to_json
from server.openapi import openapi_document
from server.services import Services


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        checks: dict[str, Any] = {
            "storage": await services.storage.health(),
            "draining": services.streams.draining,
            "mock_mode": services.settings.mock_mode,
        }
        ready = bool(checks["storage"]) and not checks["draining"]
        # "draining" wins over "not_ready": a balancer's log then says why it was taken out.
        status = "ready" if ready else "draining" if checks["draining"] else "not_ready"
        body = {"status": status, "checks": checks}
        return Response(
            to_json(body), status=200 if ready else 503, content_type="application/json"
        )

    def document() -> dict[str, Any]:
        return openapi_document(sorted(services.gateway.catalog.models))

    @app.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return document()

    @app.get("/docs")
    async def docs() -> Response:
        return Response(render_docs_page(document()), content_type="text/html; charset=utf-8")
