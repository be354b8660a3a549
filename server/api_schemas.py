"""JSON Schemas of the request bodies, built from the wire parsers' own field tables.

Owns: what `/openapi.json` says each request body may hold. The property names come from
`SUPPORTED` and `IGNORED` in `server/wire/responses.py`, `openai_chat.py` and
`anthropic_messages.py`, so a field a parser starts accepting appears here at once (as
"any value" until `FIELDS` describes it), and `additionalProperties: false` matches their
refusal of unknown fields.

Rules (each one is what the parser enforces, so a body outside the schema is refused):
- Required fields are the parsers' required ones. An optional field may be JSON `null`
  (the parsers treat null as absent). Ignored fields take any value.
- A field the parser always refuses when present (`previous_response_id`, `conversation`,
  `functions`, `function_call`) may only be null.
- Constraints that span fields (a tool choice naming a tool that is not given,
  `stream_options` without `stream`, `max_tokens` disagreeing with
  `max_completion_tokens`) cannot be written in JSON Schema: such a body matches the
  schema and gets a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from server.wire import anthropic_messages, openai_chat, responses

S = dict[str, Any]


def nullable(schema: S) -> S:
    return {"anyOf": [schema, {"type": "null"}]}


_STRING: S = {"type": "string"}
_BOOL: S = {"type": "boolean"}
_NONEMPTY: S = {"type": "string", "minLength": 1}
_ONLY_NULL: S = {"type": "null", "description": "Not supported: only null is accepted"}
_OBJECT: S = {"type": "object"}
_OBJECTS: S = {"type": "array", "items": {"type": "object"}}
_METADATA: S = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
}


def _range(kind: str, minimum: float, maximum: float | None = None) -> S:
    out: S = {"type": kind, "minimum": minimum}
    if maximum is not None:
        out["maximum"] = maximum
    return out


CONSTRAINTS: S = {
    "type": "object",
    "description": "The gateway's routing and budget extension",
    "additionalProperties": False,
    "properties": {
        "routing": nullable({
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "strategy": nullable({"enum": ["cost", "latency", "reliability", "weighted"]}),
                "allow_providers": nullable(
                    {"type": "array", "minItems": 1, "items": _NONEMPTY}
                ),
                "deny_providers": nullable({"type": "array", "items": _NONEMPTY}),
            },
        }),
        "budget": nullable({
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_cost_usd": nullable({
                    "description": "USD, a positive number or decimal string such as \"0.05\"",
                    "anyOf": [
                        {"type": "number", "exclusiveMinimum": 0},
                        {"type": "string"},
                    ],
                }),
            },
        }),
    },
}

# Field schemas per surface; a field the parser knows but this table does not is "any".
FIELDS: Mapping[str, Mapping[str, S]] = {
    "responses": {
        "input": {
            "description": "A string, {prompt}, {messages}, or a list of Responses input items",
            "type": ["string", "object", "array"],
        },
        "instructions": _STRING,
        "max_output_tokens": _range("integer", 1),
        "temperature": _range("number", 0, 2),
        "top_p": _range("number", 0, 1),
        "metadata": _METADATA,
        "stream": _BOOL,
        "tools": _OBJECTS,
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": _BOOL,
        "text": _OBJECT,
        "user": _STRING,
        "safety_identifier": _STRING,
        "constraints": CONSTRAINTS,
        "previous_response_id": _ONLY_NULL,
        "conversation": _ONLY_NULL,
    },
    "chat": {
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "max_tokens": _range("integer", 1),
        "max_completion_tokens": _range("integer", 1),
        "temperature": _range("number", 0, 2),
        "top_p": _range("number", 0, 1),
        "n": {"type": "integer", "minimum": 1, "maximum": 1},
        "stop": {
            "anyOf": [_NONEMPTY, {"type": "array", "minItems": 1, "maxItems": 4, "items": _NONEMPTY}]
        },
        "stream": _BOOL,
        "stream_options": _OBJECT,
        "tools": _OBJECTS,
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": _BOOL,
        "response_format": _OBJECT,
        "user": _STRING,
        "safety_identifier": _STRING,
        "metadata": _METADATA,
        "constraints": CONSTRAINTS,
        "functions": _ONLY_NULL,
        "function_call": _ONLY_NULL,
    },
    "messages": {
        "max_tokens": _range("integer", 1),
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "system": {"type": ["string", "array"]},
        "stop_sequences": {"type": "array", "items": _NONEMPTY},
        "temperature": _range("number", 0, 1),
        "top_p": _range("number", 0, 1),
        "tools": _OBJECTS,
        "tool_choice": _OBJECT,
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"user_id": nullable(_STRING)},
        },
        "stream": _BOOL,
        "constraints": CONSTRAINTS,
    },
}
_REQUIRED = {
    "responses": ("model", "input"),
    "chat": ("model", "messages"),
    "messages": ("model", "max_tokens", "messages"),
}
_TABLES = {"responses": responses, "chat": openai_chat, "messages": anthropic_messages}
_HELLO = [{"role": "user", "content": "Say hello to the gateway"}]
_EXAMPLES: Mapping[str, S] = {
    "responses": {"model": "gpt-4.1", "input": "Say hello to the gateway",
                  "constraints": {"routing": {"strategy": "cost"}}},
    "chat": {"model": "gpt-4.1", "messages": _HELLO},
    "messages": {"model": "claude-3.5-haiku", "max_tokens": 256, "messages": _HELLO},
}


def _model(examples: Iterable[str]) -> S:
    listed = list(examples)
    return {
        "type": "string",
        "minLength": 1,
        "description": "A model or alias from `GET /v1/models`",
        "examples": listed,
        "example": listed[0] if listed else "gpt-4.1",
    }


def request_schema(surface: str, models: Iterable[str], description: str) -> S:
    """The body schema of one surface ("responses", "chat", "messages")."""
    table = _TABLES[surface]
    fields = FIELDS[surface]
    required = _REQUIRED[surface]
    properties: S = {}
    for name in (*table.SUPPORTED, *table.IGNORED):
        if name == "model":
            schema = _model(models)
        elif name in table.IGNORED:
            schema = {"description": "Accepted and ignored"}
        else:
            schema = fields.get(name, {})
        keep = name in required or name in table.IGNORED or schema is _ONLY_NULL or not schema
        properties[name] = schema if keep else nullable(schema)
    return {
        "type": "object",
        "description": description,
        "example": _EXAMPLES[surface],
        "required": list(required),
        "additionalProperties": False,
        "properties": properties,
    }
