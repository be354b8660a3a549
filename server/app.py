"""`create_app(services)`: the Quart-Trio application, with no module globals.

Owns: assembling routes (the model routes go to `server/hot.py`, in front of Quart), the
error handler (every error body carries the request id the client sees), the request-id,
body (size, time and memory of request bodies) and idempotency-key (`server/idempotent.py`)
middlewares and per-response headers, and the entry in front of them (`server/front.py`:
unkeyed hot-route requests in one call chain). Every route gets its dependencies from the `Services` passed in, so a test can
build an app around its own storage, clock and providers.
"""

from __future__ import annotations

import logging
import secrets
from typing import cast

from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from adapters.idempotency import IdempotencyKeys
from core.errors import GatewayError, InvalidRequest, NotFound
from server.bodylimit import BodyBudget, BodyLimit
from server.errors import error_body, error_headers, internal_error
from server.final_send import FinalSend
from server.front import Front
from server.hot import ASGIApp, HotRoutes
from server.http import to_json
from server.idempotent import IdempotentRoutes
from server.requestid import CLIENT_REQUEST_ID, RequestIds
from server.routes import (
    admin,
    anthropic,
    chat,
    console,
    insights,
    jobs,
    metrics,
    models,
    ops,
    responses,
    usage,
    ws,
)
from server.services import Services

log = logging.getLogger("umg.server")

# The model routes answered at the ASGI level (server/hot.py), path -> handler.
HOT_ROUTES = {**responses.ROUTES, **chat.ROUTES, **anthropic.ROUTES}
# The routes that take an `Idempotency-Key` (server/idempotent.py).
IDEMPOTENT_PATHS = frozenset({*HOT_ROUTES, "/v1/jobs"})


def _where() -> str:
    """What is being served, for logs: `METHOD /path`, or `WEBSOCKET /path` (no request there)."""
    if has_request_context():
        return f"{request.method} {request.path}"
    return f"WEBSOCKET {websocket.path}"


def _client_request_id() -> str | None:
    scope = request.scope if has_request_context() else websocket.scope
    value = scope.get(CLIENT_REQUEST_ID)
    return value if isinstance(value, str) else None


def error_response(err: GatewayError) -> Response:
    """`err` in the route's error shape, with the request id the client sees in it."""
    path = request.path if has_request_context() else ""
    body = error_body(err, path, _client_request_id())
    return Response(
        to_json(body), status=err.status, headers=error_headers(err), content_type="application/json"
    )


def _answered_in_front() -> Response:
    """The view of a hot route's rule: never called, `HotRoutes` answers POST there first.
    The rule stays so Quart answers the other methods on that path as on any route."""
    raise RuntimeError("a hot route reached Quart: HotRoutes must answer it")


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("umg")
    app.config["MAX_CONTENT_LENGTH"] = None  # BodyLimit does it, and closes the connection
    app.config["BODY_TIMEOUT"] = None  # BodyLimit has read the whole body, within its deadline
    app.config["JSON_SORT_KEYS"] = False
    # Quart types its ASGI callable with Hypercorn's TypedDicts; the layers hand it the
    # same messages, typed as plain mappings (server/hot.py's ASGIApp).
    quart = cast(ASGIApp, app.asgi_app)
    hot = HotRoutes(quart, services, HOT_ROUTES, body_timeout=app.config["BODY_TIMEOUT"])
    keys = IdempotencyKeys(services.storage, services.clock, services.settings.idempotency)
    keyed = IdempotentRoutes(hot, services, IDEMPOTENT_PATHS, keys)
    limits = services.settings.limits
    limited = BodyLimit(
        keyed, limits.max_body_bytes, limits.body_timeout_seconds, BodyBudget(limits.body_budget_bytes)
    )
    # the hot routes unkeyed in one call chain, the rest through the layers (server/front.py)
    app.asgi_app = Front(FinalSend(RequestIds(limited)), hot, limited)  # type: ignore[method-assign,assignment]
    for path in HOT_ROUTES:
        app.add_url_rule(path, f"hot:{path}", _answered_in_front, methods=["POST"])

    @app.errorhandler(GatewayError)
    async def on_gateway_error(err: GatewayError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    async def on_http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 404:
            return error_response(NotFound(f"No route for {_where()}"))
        if status == 405:
            bad = InvalidRequest(f"Method {request.method} is not allowed on {request.path}")
            response = error_response(bad)
            response.status_code = 405
            allowed = getattr(err, "valid_methods", None) or ()
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        generic = InvalidRequest(err.description or "Bad request")
        response = error_response(generic)
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    async def on_unexpected(err: Exception) -> Response:
        ref = secrets.token_hex(6)
        log.exception("unhandled error (ref %s) on %s", ref, _where())
        return error_response(internal_error(ref))

    surfaces = (anthropic, jobs, models, responses, usage, insights, admin, console, ops, metrics, ws)
    for surface in surfaces:
        surface.register(app, services)
    return app
