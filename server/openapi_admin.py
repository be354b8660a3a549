"""The OpenAPI description of the admin API and the ledger reads (`/v1/admin/*`,
`/v1/me`, `/v1/requests`, `/v1/usage/series`) and the console page.

Owns: these paths and their schemas; `server/openapi.py` merges them into the one
document (and passes its helpers in, so both write operations the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

S = dict[str, Any]

_FILTERS = ("tenant", "project", "key_id", "model", "provider", "status")
_MONEY = {"type": "string", "description": "USD as a decimal string"}


def _q(name: str, description: str, **schema: Any) -> S:
    return {"name": name, "in": "query", "description": description,
            "schema": schema or {"type": "string"}}


def _window() -> list[S]:
    return [
        _q("from", "RFC 3339, inclusive (default: 30 days before `to`)", type="string", format="date-time"),
        _q("to", "RFC 3339, exclusive (default: now)", type="string", format="date-time"),
        *(_q(f, f"only rows whose {f} is this (a tenant key: its own tenant only)",
             type="string", minLength=1, maxLength=200) for f in _FILTERS),
    ]


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_CLIENT_ID = _q("client_request_id", "only the row of the request that sent this `x-request-id`"
                " (1 to 128 characters of A-Z a-z 0-9 . _ : -)",
                type="string", pattern="^[A-Za-z0-9._:-]{1,128}$")
_PAGE = [
    _q("limit", "rows per page, 1 to 500 (default 50)", type="integer", minimum=1, maximum=500),
    _q("after", "`next_after` of the previous page"),
]
_KEY_FIELDS: S = {
    "name": {"type": ["string", "null"], "maxLength": 128},
    "rpm": {"type": ["integer", "null"], "minimum": 1},
    "tpm": {"type": ["integer", "null"], "minimum": 1},
    "budget_usd": {"type": ["string", "null"], "description": "USD per period, >= 0, at most 10 decimals"},
    "budget_period": {"enum": ["day", "month", "total"]},
}

ADMIN_SCHEMAS: dict[str, S] = {
    "Key": {
        "type": "object",
        "description": "A key as listings show it: never the secret or its hash",
        "properties": {
            "id": {"type": "string"}, "prefix": {"type": "string"},
            "tenant": {"type": "string"}, "project": {"type": "string"},
            "admin": {"type": "boolean"}, **_KEY_FIELDS,
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "spend": {
                "type": ["object", "null"],
                "properties": {"period": {"type": "string"}, "limit_usd": _MONEY,
                               "spent_usd": _MONEY, "reserved_usd": _MONEY},
            },
        },
    },
    "KeyCreated": {
        "allOf": [{"$ref": "#/components/schemas/Key"}],
        "properties": {"key": {"type": "string", "description": "the plain key: shown here once, never again"}},
    },
    "KeyCreate": {
        "type": "object",
        "required": ["tenant", "project"],
        "additionalProperties": False,
        "properties": {"tenant": {"type": "string", "minLength": 1, "maxLength": 128},
                       "project": {"type": "string", "minLength": 1, "maxLength": 128},
                       "admin": {"type": "boolean", "default": False}, **_KEY_FIELDS},
    },
    "KeyPatch": {
        "type": "object",
        "additionalProperties": False,
        "description": "Only the fields given change; null clears name, rpm, tpm or budget_usd",
        "properties": _KEY_FIELDS,
    },
    "LedgerRow": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "request_id": {"type": "string"},
            "client_request_id": {
                "type": ["string", "null"], "description": "the client's own x-request-id, when it sent one",
            },
            "at": {"type": "string", "format": "date-time"},
            **{c: {"type": ["string", "null"]} for c in ("tenant", "project", "key_id", "endpoint",
                                                         "model", "provider", "deployment",
                                                         "status", "error_code")},
            "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
            "cost_usd": _MONEY, "latency_ms": {"type": ["integer", "null"]},
            "ttft_ms": {"type": ["integer", "null"]}, "attempts": {"type": "integer"},
            "attempt_log": {
                "type": "array",
                "items": {"type": "object", "properties": {
                    "deployment": {"type": "string"}, "provider": {"type": "string"},
                    "attempt": {"type": "integer"},
                    "outcome": {"type": "string", "description": "ok, a failure kind, or client_gone"},
                }},
            },
        },
    },
    "LedgerPage": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/LedgerRow"}},
            "has_more": {"type": "boolean"},
            "next_after": {"type": ["string", "null"]},
        },
    },
    "UsageSeries": {
        "type": "object",
        "properties": {
            "bucket": {"enum": ["hour", "day"]}, "by": {"type": ["string", "null"]},
            "points": {"type": "array", "items": {"type": "object", "properties": {
                "at": {"type": "string", "format": "date-time"}, "group": {"type": "string"},
                "requests": {"type": "integer"}, "errors": {"type": "integer"},
                "total_tokens": {"type": "integer"}, "cost_usd": _MONEY}}},
            "latency": {"type": "array", "description": "p50/p90/p95/p99 ms per bucket (estimates)"},
            "ttft": {"type": "array", "description": "time to first token, as latency"},
            "totals": {"type": "object"},
        },
    },
    "DeploymentHealth": {
        "type": "object",
        "properties": {
            "deployment": {"type": "string"}, "model": {"type": "string"}, "provider": {"type": "string"},
            "circuit": {"enum": ["closed", "open", "half_open"]}, "available": {"type": "boolean"},
            "window": {"type": "integer"}, "failures": {"type": "integer"},
            "error_rate": {"type": ["number", "null"]}, "consecutive_failures": {"type": "integer"},
            "latency_ms": {"type": ["number", "null"], "description": "EWMA of successful calls"},
            "cooldown_left_s": {"type": ["number", "null"]},
        },
    },
}

Op = Callable[..., S]


def admin_paths(
    op: Op, ref: Callable[[str], S], json: Callable[[S], S], errors: Callable[..., S]
) -> dict[str, S]:
    def ok(description: str, schema: S, status: str = "200") -> S:
        return {status: {"description": description, **json(schema)}}

    admin_errors = errors(401, 403)
    one_key = ok("The key", ref("Key"))
    page = {"security": [], "responses": {"200": {"description": "HTML, CSS or JavaScript"},
                                          "404": {"description": "No such console file"}}}
    return {
        "/console": {"get": {"summary": "The web console (sign in with a key)", **page}},
        "/console/{name}": {"get": {"summary": "The console's script and style sheet", **page,
                                    "parameters": [{"name": "name", "in": "path", "required": True,
                                                    "schema": {"type": "string"}}]}},
        "/v1/me": {"get": op("The caller's own key and its spend", one_key)},
        "/v1/requests": {
            "get": op("The caller's tenant's ledger, newest first", ok("A page", ref("LedgerPage")),
                      errors=errors(400, 401, 403), parameters=[*_window(), _CLIENT_ID, *_PAGE])
        },
        "/v1/usage/series": {
            "get": op("Requests, tokens and cost per hour or day, with latency percentiles",
                      ok("The series", ref("UsageSeries")), errors=errors(400, 401, 403),
                      parameters=[*_window(),
                                  _q("bucket", "hour (windows up to 31 days) or day", enum=["hour", "day"]),
                                  _q("by", "group by this column, or none",
                                     enum=["model", "provider", "project", "tenant", "key_id", "status", "deployment", "none"])])
        },
        "/v1/admin/keys": {
            "post": op("Create a key (admin); the answer holds the plain key, once",
                       ok("Created", ref("KeyCreated"), "201"), body="KeyCreate",
                       errors=errors(400, 401, 403)),
            "get": op("List keys of every tenant, or of one (admin)",
                      ok("Keys", {"type": "object", "properties": {
                          "data": {"type": "array", "items": ref("Key")}}}),
                      errors=admin_errors, parameters=[_q("tenant", "only this tenant's keys")]),
        },
        "/v1/admin/keys/{id}": {
            "get": op("One key (admin)", one_key, errors=errors(401, 403, 404), parameters=_ID),
            "patch": op("Change a key's name, limits or budget (admin)", one_key, body="KeyPatch",
                        errors=errors(400, 401, 403, 404, 409), parameters=_ID),
        },
        "/v1/admin/keys/{id}/revoke": {
            "post": op("Revoke a key (admin); its next request is refused", one_key,
                       errors=errors(401, 403, 404), parameters=_ID)
        },
        "/v1/admin/requests": {
            "get": op("The ledger of every tenant, filtered and paged (admin)",
                      ok("A page", ref("LedgerPage")), errors=errors(400, 401, 403),
                      parameters=[*_window(), _CLIENT_ID, *_PAGE])
        },
        "/v1/admin/providers": {
            "get": op("Each deployment's health and breaker state, as this process sees it (admin)",
                      ok("Deployments", {"type": "object", "properties": {
                          "data": {"type": "array", "items": ref("DeploymentHealth")}}}),
                      errors=admin_errors)
        },
    }
