"""The one place where errors become HTTP responses.

Owns: mapping `GatewayError` (and anything unexpected) to a status code, headers and the
OpenAI error shape `{"error": {"message", "type", "param", "code"}}`. Unexpected
exceptions become a 500 whose body says only "internal error" plus the request id; the
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.errors import GatewayError

log = logging.getLogger("umg.server")


def error_headers(err: GatewayError) -> dict[str, str]:
    headers = dict(err.headers)
    if err.retry_after is not None and "retry-after" not in headers:
        headers["retry-after"] = str(max(1, int(-(-err.retry_after // 1))))
    return headers


def error_body(err: GatewayError, path: str, request_id: str | None) -> dict[str, Any]:
    """`err` in the error shape of the route at `path` (Anthropic's on `/v1/messages`,
    else OpenAI's), with the request id the client sees in it."""
    if path.startswith("/v1/messages"):
        from server.wire.anthropic_messages import anthropic_error_body

        return {**anthropic_error_body(err), "request_id": request_id}
    shaped = err.to_body()
    return {"error": {**shaped["error"], "request_id": request_id}}


def error_json(err: GatewayError) -> bytes:
    return json.dumps(err.to_body()).encode()


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(f"The gateway hit an internal error (request {request_id}); it was logged")
