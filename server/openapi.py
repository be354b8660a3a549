"""The OpenAPI 3.1 description of every route: what each one accepts and can answer.

Owns: the machine-readable API contract. Request bodies come from `server.api_schemas`
(built from the wire parsers' field tables); responses, statuses and SSE event schemas
are written here. A test checks that every route the app serves is described, and
schemathesis (`make fuzz-api`) that the server keeps to it. `/docs` renders this
document (`server.docs_page`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server import api_schemas
from server.openapi_admin import ADMIN_SCHEMAS, admin_paths

S = dict[str, Any]
_JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "aborted")


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: S) -> S:
    return {"content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "Malformed request; `error.param` names the field",
    401: "Missing, invalid or revoked API key",
    402: "Budget exceeded (key budget or `max_cost_usd`)",
    403: "The key may not do this (an admin route called with a tenant key)",
    404: "Unknown model, job, key or route",
    409: "Conflict with the current state (a finished job, a revoked key)",
    410: "Expired: a stored response's events are no longer kept",
    413: "Body larger than the limit; the connection is closed",
    415: "A Content-Type other than JSON",
    426: "Not a WebSocket handshake",
    429: "Rate limited; see `Retry-After` and `x-ratelimit-*`",
    502: "Every provider attempt failed (or the process running a stored stream is gone)",
    503: "Draining for shutdown (or a provider is unavailable)",
    504: "Providers timed out",
}


def _errors(*codes: int, shape: str = "Error") -> S:
    return {str(c): {"description": _ERROR_TEXT[c], **_json(_ref(shape))} for c in codes}


_MODEL_CODES = (400, 401, 402, 404, 413, 415, 429, 502, 503, 504)
_BODY_CODES = (400, 401, 413, 415)

_SCHEMAS: dict[str, S] = {
    "Error": {
        "type": "object",
        "description": "The OpenAI error shape, on every route but /v1/messages",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code", "request_id"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                    "request_id": {
                        "type": ["string", "null"],
                        "description": "The request's id, as in the x-request-id header",
                    },
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "description": "Anthropic's error shape, on /v1/messages",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
            "request_id": {
                "type": ["string", "null"],
                "description": "The request's id, as in the x-request-id header",
            },
        },
    },
    "Constraints": api_schemas.CONSTRAINTS,
    "Gateway": {
        "type": "object",
        "description": "What the gateway did: route, attempts, exact cost",
        "properties": {
            "request_id": {"type": "string"},
            "model": {"type": ["string", "null"]},
            "provider": {"type": ["string", "null"]},
            "deployment": {"type": ["string", "null"]},
            "routing": {"type": "string"},
            "attempts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "deployment": {"type": "string"},
                        "provider": {"type": "string"},
                        "attempt": {"type": "integer"},
                        "outcome": {"type": "string"},
                    },
                },
            },
            "cost_usd": {"type": "string", "description": "Decimal string, USD"},
            "overhead_ms": {
                "type": "number",
                "description": "Time spent in the gateway, excluding the provider (also the "
                "x-gateway-overhead-ms header)",
            },
        },
    },
    "Response": {
        "type": "object",
        "description": "OpenAI Responses object plus `gateway`",
        "required": ["id", "object", "status", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
            "gateway": _ref("Gateway"),
        },
        "example": {
            "id": "resp_0123", "object": "response", "status": "completed", "model": "gpt-4.1",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hello!"}]}],
            "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11},
            "gateway": {"provider": "openai", "deployment": "openai/gpt-4.1", "routing": "cost",
                        "attempts": [{"deployment": "openai/gpt-4.1", "provider": "openai",
                                      "attempt": 1, "outcome": "ok"}],
                        "cost_usd": "0.0000340000"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "description": "OpenAI chat.completion plus `gateway`",
        "required": ["id", "object", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
            "gateway": _ref("Gateway"),
        },
    },
    "Message": {
        "type": "object",
        "description": "Anthropic Message",
        "required": ["id", "type", "role", "content"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": {"type": "string"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]},
            "usage": {"type": "object"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "object", "status"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "job"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "canceled", "aborted"]},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
            "request": {"type": "object"},
            "result": {"oneOf": [_ref("Response"), {"type": "null"}]},
            "error": {"type": ["object", "null"]},
            "cost_usd": {"type": ["string", "null"]},
        },
    },
    "JobList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Job")},
            "has_more": {"type": "boolean"},
        },
    },
    "ModelList": {"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array"}}},
    "Usage": {"type": "object", "properties": {
        "totals": {"type": "object"}, "groups": {"type": "array"},
        "budgets": {"type": "array", "description": "every budget covering the caller, current period",
                    "items": {"type": "object", "required": ["kind", "period", "limit_usd", "remaining_usd"],
                              "properties": {
                                  "kind": {"enum": ["key", "project", "tenant"]},
                                  "tenant": {"type": "string"}, "project": {"type": ["string", "null"]},
                                  "period": {"enum": ["day", "month", "total"]},
                                  "period_key": {"type": "string"},
                                  **{f: {"type": "string"} for f in (
                                      "limit_usd", "spent_usd", "reserved_usd", "remaining_usd")},
                              }}},
    }},
    # Server-sent events: one schema per stream, the `data` of each event (see docs/api.md).
    "ResponsesStreamEvent": {
        "type": "object",
        "description": "`event: <type>` + `data: {type, sequence_number, ...}`; ends with "
        "response.completed, response.incomplete or response.failed",
        "required": ["type", "sequence_number"],
        "properties": {
            "type": {"enum": [
                "response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added", "response.output_text.delta",
                "response.output_text.done", "response.content_part.done",
                "response.output_item.done", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.completed",
                "response.incomplete", "response.failed", "error",
            ]},
            "sequence_number": {"type": "integer"},
            "delta": {"type": "string"},
            "response": _ref("Response"),
        },
    },
    "JobStreamEvent": {
        "type": "object",
        "description": "`id: <sequence_number>`, `event: <type>`, `data: {...}`: one per status "
        "change of the job (`job.running` once per run); the terminal one, which also carries "
        "the job object, ends the stream",
        "required": ["type", "sequence_number", "job_id", "status", "attempt", "error"],
        "properties": {
            "type": {"enum": [f"job.{s}" for s in _JOB_STATUSES]},
            "sequence_number": {"type": "integer", "minimum": 0},
            "job_id": {"type": "string"},
            "status": {"enum": list(_JOB_STATUSES)},
            "attempt": {"type": "integer", "minimum": 0},
            "error": {"type": ["object", "null"]},
            "job": _ref("Job"),
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "description": "`data: {chat.completion.chunk}` events, then `data: [DONE]`; a failure "
        "after the first chunk is `data: {\"error\": {...}}`",
        "properties": {
            "object": {"const": "chat.completion.chunk"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
            "error": {"type": "object"},
        },
    },
    "MessageStreamEvent": {
        "type": "object",
        "description": "Anthropic events: message_start, content_block_start, ping, "
        "content_block_delta, content_block_stop, message_delta, message_stop, or error",
        "required": ["type"],
        "properties": {"type": {"enum": [
            "message_start", "content_block_start", "ping", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop", "error",
        ]}},
    },
}


def _sse(event: str, names: Sequence[str] = (), done: bool = False) -> S:
    """One server-sent event (OpenAPI 3.1: the schema describes each event): its `event`
    name (when the stream names its events) and its `data`, JSON matching `event`, or the
    literal `[DONE]` that ends an OpenAI chat stream."""
    data: S = {"type": "string", "contentMediaType": "application/json",
               "contentSchema": _ref(event)}
    if done:
        data = {"anyOf": [{"const": "[DONE]"}, data]}
    properties: S = {"data": data}
    if names:
        properties["event"] = {"enum": list(names)}
    return {"schema": {
        "type": "object",
        "description": f"Server-sent events; each `data` is a {event}",
        "required": ["event", "data"] if names else ["data"],
        "properties": properties,
    }, "x-event-schema": _ref(event)}


_RESPONSES_EVENTS = _SCHEMAS["ResponsesStreamEvent"]["properties"]["type"]["enum"]
_MESSAGE_EVENTS = _SCHEMAS["MessageStreamEvent"]["properties"]["type"]["enum"]
_JOB_EVENTS = _SCHEMAS["JobStreamEvent"]["properties"]["type"]["enum"]


def _op(summary: str, ok: S, *, body: str | None = None, errors: S | None = None, **extra: Any) -> S:
    op: S = {"summary": summary, "responses": {**ok, **(errors or _errors(401))}, **extra}
    if body:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    return op


def _path_param(name: str) -> list[S]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]


def openapi_document(models: Sequence[str] = ()) -> dict[str, Any]:
    """The document; `models` (the served catalog's ids) become the `model` examples."""
    schemas = {
        **_SCHEMAS,
        **ADMIN_SCHEMAS,
        "UnifiedRequest": api_schemas.request_schema(
            "responses", models, "The unified request (OpenAI Responses shape plus `constraints`)"),
        "ChatCompletionRequest": api_schemas.request_schema(
            "chat", models, "OpenAI Chat Completions request plus `constraints`"),
        "MessagesRequest": api_schemas.request_schema(
            "messages", models, "Anthropic Messages request plus `constraints`"),
        "JobCreate": {
            "type": "object",
            "required": ["request"],
            "additionalProperties": False,
            "properties": {
                "request": _ref("UnifiedRequest"),
                "webhook_url": {"anyOf": [{"type": "string", "pattern": "^https?://"}, {"type": "null"}]},
                "deadline": {"type": "string", "description": "a duration (`30s`, `5m`,"
                             " `1h30m`) from now, or an RFC 3339 time; a `Cancel-After` header does"
                             " the same"},
                "webhook_events_filter": {
                    "type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"enum": ["start", "output", "completed"]},
                },
            },
        },
    }
    model_errors = _errors(*_MODEL_CODES)
    answer = {"200": {"description": "The answer (JSON, or SSE when `stream` is true)",
                      "content": {"application/json": {"schema": _ref("Response")},
                                  "text/event-stream": _sse("ResponsesStreamEvent", _RESPONSES_EVENTS)}}}
    chat = {"200": {"description": "chat.completion, or SSE chunks when `stream` is true",
                    "content": {"application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": _sse("ChatCompletionChunk", done=True)}}}
    job = {"200": {"description": "The job", **_json(_ref("Job"))}}
    paths: dict[str, S] = {
        "/v1/responses": {"post": _op("Unified request", answer, body="UnifiedRequest", errors=model_errors)},
        "/v1/responses/stream": {
            "post": _op("Unified request, streamed as Responses SSE events",
                        {"200": {"description": "SSE stream", "content": {
                            "text/event-stream": _sse("ResponsesStreamEvent", _RESPONSES_EVENTS)}}},
                        body="UnifiedRequest", errors=model_errors)
        },
        "/v1/responses/{id}": {
            "get": _op("A stored response: the object, or its stream events (resumable)",
                       {"200": {"description": "The response object, or SSE events after the cursor"
                                " when `stream` is true",
                                "content": {"application/json": {"schema": _ref("Response")},
                                            "text/event-stream": _sse("ResponsesStreamEvent",
                                                                      _RESPONSES_EVENTS)}}},
                       errors=_errors(400, 401, 404, 410, 502),
                       parameters=[
                           {"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^resp_[A-Za-z0-9]{1,64}$"}},
                           {"name": "stream", "in": "query", "schema": {"enum": ["true", "false"]}},
                           {"name": "starting_after", "in": "query",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                            "description": "send the events after this sequence number"},
                           {"name": "Last-Event-ID", "in": "header",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                            "description": "as starting_after (the query wins)"},
                           {"name": "include_obfuscation", "in": "query",
                            "schema": {"enum": ["true", "false"]}, "description": "accepted, ignored"},
                       ])
        },
        "/v1/responses/ws": {
            "get": _op("WebSocket: many unified requests per connection (see docs/api.md)",
                       {"101": {"description": "Switching protocols"}},
                       errors=_errors(401, 426, 503))
        },
        "/v1/chat/completions": {
            "post": _op("OpenAI Chat Completions", chat, body="ChatCompletionRequest", errors=model_errors)
        },
        "/v1/chat.completions": {
            "post": _op("OpenAI Chat Completions (original path)", chat,
                        body="ChatCompletionRequest", errors=model_errors)
        },
        "/v1/messages": {
            "post": _op("Anthropic Messages",
                        {"200": {"description": "Message, or Anthropic SSE events when `stream` is true",
                                 "content": {"application/json": {"schema": _ref("Message")},
                                             "text/event-stream": _sse("MessageStreamEvent", _MESSAGE_EVENTS)}}},
                        body="MessagesRequest", errors=_errors(*_MODEL_CODES, shape="AnthropicError"))
        },
        "/v1/messages/count_tokens": {
            "post": _op("Anthropic token count (the gateway's estimate)",
                        {"200": {"description": "{input_tokens}", **_json({"type": "object"})}},
                        body="MessagesRequest", errors=_errors(400, 401, 404, shape="AnthropicError"))
        },
        "/v1/models": {"get": _op("List models", {"200": {"description": "Models", **_json(_ref("ModelList"))}})},
        "/v1/models/{model}": {
            "get": _op("One model", {"200": {"description": "Model", **_json({"type": "object"})}},
                       errors=_errors(401, 404), parameters=_path_param("model"))
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
                        body="JobCreate", errors=_errors(*_BODY_CODES, 404),
                        parameters=[{"name": "Prefer", "in": "header", "schema": {"type": "string"},
                                     "description": "wait=N holds the answer up to N seconds"}]),
            "get": _op("List jobs", {"200": {"description": "Page of jobs", **_json(_ref("JobList"))}},
                       errors=_errors(400, 401),
                       parameters=[
                           {"name": "status", "in": "query",
                            "schema": {"enum": ["queued", "running", "succeeded", "failed", "canceled", "aborted"]}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                           {"name": "after", "in": "query",  # server/query.py: plain text
                            "schema": {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}},
                       ]),
        },
        "/v1/jobs/{id}": {
            "get": _op("Get a job", job, errors=_errors(401, 404), parameters=_path_param("id"))
        },
        "/v1/jobs/{id}/stream": {
            "get": _op("A job's events as SSE: replayed, then live until the job ends (resumable)",
                       {"200": {"description": "SSE events after the cursor",
                                "content": {"text/event-stream": _sse("JobStreamEvent", _JOB_EVENTS)}}},
                       errors=_errors(400, 401, 404),
                       parameters=[
                           *_path_param("id"),
                           {"name": "starting_after", "in": "query",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                            "description": "send the events after this sequence number"},
                           {"name": "Last-Event-ID", "in": "header",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                            "description": "as starting_after (the query wins)"},
                       ])
        },
        "/v1/jobs/{id}/cancel": {
            "post": _op("Cancel a job", job, errors=_errors(401, 404, 409), parameters=_path_param("id"))
        },
        "/v1/webhooks/secret": {
            "get": _op("This tenant's webhook signing secret", {"200": {"description": "{key}", **_json({"type": "object"})}})
        },
        **admin_paths(_op, _ref, _json, _errors),
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "up"}}}},
        "/readyz": {"get": {"summary": "Readiness", "security": [],
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready or draining"}}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text format); an admin key, unless [metrics] public = true",
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors(401, 403, 404)},
        }},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}},
        "/docs": {"get": {"summary": "API reference page", "security": [], "responses": {"200": {"description": "HTML"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Unified Model Gateway", "version": "0.1.0"},
        "servers": [{"url": "http://localhost:3000"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
