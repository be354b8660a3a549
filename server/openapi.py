"""The OpenAPI 3.1 description of every route, and the `/docs` page that renders it.

Owns: the machine-readable API contract. Schemas are written out here by hand (the wire
parsers in `server/wire` are the enforcement; a test checks that every route the app
serves is described here). `/docs` is a self-contained HTML page: no CDN, no scripts.
"""

from __future__ import annotations

import html
from typing import Any

S = dict[str, Any]


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: S) -> S:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> S:
    return {str(c): {"description": _ERROR_TEXT[c], **_json(_ref("Error"))} for c in codes}


_ERROR_TEXT = {
    400: "Malformed request; `error.param` names the field",
    401: "Missing, invalid or revoked API key",
    402: "Budget exceeded (key budget or `max_cost_usd`)",
    404: "Unknown model, job or route",
    413: "Body larger than the limit; the connection is closed",
    429: "Rate limited; see `Retry-After` and `x-ratelimit-*`",
    502: "Every provider attempt failed",
    504: "Providers timed out",
}
_MODEL_ERRORS = _errors(400, 401, 402, 404, 413, 429, 502, 504)

_MESSAGE: S = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object", "required": ["type"]}},
            ]
        },
    },
}
_CONSTRAINTS: S = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "routing": {
            "type": "object",
            "properties": {
                "strategy": {"enum": ["cost", "latency", "reliability", "weighted"]},
                "allow_providers": {"type": "array", "items": {"type": "string"}},
                "deny_providers": {"type": "array", "items": {"type": "string"}},
            },
        },
        "budget": {
            "type": "object",
            "properties": {"max_cost_usd": {"type": "number", "exclusiveMinimum": 0}},
        },
    },
}
_SCHEMAS: dict[str, S] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Constraints": _CONSTRAINTS,
    "UnifiedRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "object", "properties": {"prompt": {"type": "string"}}},
                    {"type": "object", "properties": {"messages": {"type": "array", "items": _MESSAGE}}},
                    {"type": "array", "items": {"type": "object"}},
                ]
            },
            "instructions": {"type": "string"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stream": {"type": "boolean"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {},
            "text": {"type": "object"},
            "user": {"type": "string"},
            "constraints": _ref("Constraints"),
        },
    },
    "Gateway": {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "provider": {"type": ["string", "null"]},
            "deployment": {"type": ["string", "null"]},
            "routing": {"type": "string"},
            "attempts": {"type": "array", "items": {"type": "object"}},
            "cost_usd": {"type": "string", "description": "Decimal string, USD"},
        },
    },
    "Response": {
        "type": "object",
        "description": "OpenAI Responses object plus `gateway`",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
            "gateway": _ref("Gateway"),
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": "integer"},
            "max_completion_tokens": {"type": "integer"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {},
            "response_format": {"type": "object"},
            "constraints": _ref("Constraints"),
        },
    },
    "ChatCompletion": {"type": "object", "description": "OpenAI chat.completion plus `gateway`"},
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "description": "Anthropic Messages request",
    },
    "Message": {"type": "object", "description": "Anthropic Message"},
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "job"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "canceled"]},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
            "result": {"oneOf": [_ref("Response"), {"type": "null"}]},
            "error": {"type": ["object", "null"]},
            "cost_usd": {"type": ["string", "null"]},
        },
    },
    "JobCreate": {
        "type": "object",
        "required": ["request"],
        "properties": {"request": _ref("UnifiedRequest"), "webhook_url": {"type": "string"}},
    },
    "ModelList": {"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array"}}},
    "Usage": {"type": "object", "properties": {"totals": {"type": "object"}, "groups": {"type": "array"}}},
}

_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


def _op(summary: str, ok: S, *, body: str | None = None, errors: S | None = None, **extra: Any) -> S:
    op: S = {"summary": summary, "responses": {**ok, **(errors or _errors(401))}, **extra}
    if body:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    return op


def openapi_document() -> dict[str, Any]:
    ok_resp = {"200": {"description": "The answer (JSON, or SSE when `stream` is true)", **_json(_ref("Response"))}}
    job = {"200": {"description": "The job", **_json(_ref("Job"))}}
    paths: dict[str, S] = {
        "/v1/responses": {"post": _op("Unified request", ok_resp, body="UnifiedRequest", errors=_MODEL_ERRORS)},
        "/v1/responses/stream": {
            "post": _op("Unified request, streamed as Responses SSE events",
                        {"200": {"description": "SSE stream", "content": _SSE}},
                        body="UnifiedRequest", errors=_MODEL_ERRORS)
        },
        "/v1/responses/ws": {
            "get": _op("WebSocket: many unified requests per connection (see docs/api.md)",
                       {"101": {"description": "Switching protocols"}})
        },
        "/v1/chat/completions": {
            "post": _op("OpenAI Chat Completions", {"200": {"description": "chat.completion", **_json(_ref("ChatCompletion"))}},
                        body="ChatCompletionRequest", errors=_MODEL_ERRORS)
        },
        "/v1/chat.completions": {
            "post": _op("OpenAI Chat Completions (original path)",
                        {"200": {"description": "chat.completion", **_json(_ref("ChatCompletion"))}},
                        body="ChatCompletionRequest", errors=_MODEL_ERRORS)
        },
        "/v1/messages": {
            "post": _op("Anthropic Messages", {"200": {"description": "Message", **_json(_ref("Message"))}},
                        body="MessagesRequest", errors=_MODEL_ERRORS)
        },
        "/v1/models": {"get": _op("List models", {"200": {"description": "Models", **_json(_ref("ModelList"))}})},
        "/v1/models/{model}": {
            "get": _op("One model", {"200": {"description": "Model", **_json({"type": "object"})}},
                       errors=_errors(401, 404),
                       parameters=[{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}])
        },
        "/v1/usage": {
            "get": _op("Usage of the caller's tenant", {"200": {"description": "Totals and groups", **_json(_ref("Usage"))}},
                       errors=_errors(400, 401),
                       parameters=[
                           {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                           {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                           {"name": "group_by", "in": "query", "schema": {"type": "string"},
                            "description": "comma-separated: day, hour, month, model, provider, project, status"},
                       ])
        },
        "/v1/jobs": {
            "post": _op("Create a job", {"202": {"description": "Queued", **_json(_ref("Job"))}, **job},
                        body="JobCreate", errors=_errors(400, 401),
                        parameters=[{"name": "Prefer", "in": "header", "schema": {"type": "string"},
                                     "description": "wait=N holds the answer up to N seconds"}]),
            "get": _op("List jobs", {"200": {"description": "Page of jobs", **_json({"type": "object"})}},
                       errors=_errors(400, 401),
                       parameters=[{"name": n, "in": "query", "schema": {"type": "string"}} for n in ("status", "limit", "after")]),
        },
        "/v1/jobs/{id}": {
            "get": _op("Get a job", job, errors=_errors(401, 404),
                       parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}])
        },
        "/v1/jobs/{id}/cancel": {
            "post": _op("Cancel a job", job, errors=_errors(401, 404),
                        parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}])
        },
        "/v1/webhooks/secret": {
            "get": _op("This tenant's webhook signing secret", {"200": {"description": "{key}", **_json({"type": "object"})}})
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "up"}}}},
        "/readyz": {"get": {"summary": "Readiness", "security": [],
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready or draining"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}},
        "/docs": {"get": {"summary": "API docs page", "security": [], "responses": {"200": {"description": "HTML"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Unified Model Gateway", "version": "0.1.0"},
        "servers": [{"url": "http://localhost:3000"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def render_docs_page(doc: dict[str, Any]) -> str:
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = ", ".join(sorted(op["responses"]))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Unified Model Gateway API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 10px;border-bottom:1px solid #ddd}</style>"
        "</head><body><h1>Unified Model Gateway API</h1>"
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
        "Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Responses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
