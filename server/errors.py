"""The one place where errors become HTTP responses.

Owns: mapping `GatewayError` (and anything unexpected) to a status code, headers and the
OpenAI error shape `{"error": {"message", "type", "param", "code", "request_id"}}`
(Anthropic's on `/v1/messages`). The same bodies are what the streams send when they fail
(`server/wire/*_out.py`), so an error says the same thing, request id included, wherever
it is sent. Unexpected
exceptions become a 500 whose body says only "internal error" plus the request id; the
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import GatewayError
from server.wire.anthropic_out import anthropic_error_body
from server.wire.openai_chat_out import error_chunk

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
        return anthropic_error_body(err, request_id)
    return error_chunk(err, request_id)


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(f"The gateway hit an internal error (request {request_id}); it was logged")
