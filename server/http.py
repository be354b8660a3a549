"""Reading requests: JSON bodies decoded strictly, keys found in headers.

Owns: how a request body becomes a JSON object (a `Content-Type` other than JSON is a
415; none at all is accepted; numbers with a fraction become
`Decimal`, so money is never float; duplicate keys are refused; the top level must be an
object) and where the caller's API key is read from (`Authorization: Bearer`, or
`x-api-key` as Anthropic clients send it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from quart import request

from core.errors import InvalidJSON, InvalidRequest, UnsupportedMediaType


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest(f"Duplicate key '{key}' in the JSON body", param=key)
        out[key] = value
    return out


def decode_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidJSON("The request body is empty; send a JSON object")
    try:
        value = json.loads(raw, parse_float=Decimal, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise InvalidJSON("The request body is not UTF-8") from None
    except json.JSONDecodeError as err:
        raise InvalidJSON(
            f"The request body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    if not isinstance(value, dict):
        raise InvalidJSON("The request body must be a JSON object")
    return value


def check_content_type(value: str | None) -> None:
    """A body labelled as something other than JSON is refused (no label is fine)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {media!r}; send the body as JSON"
        )


async def json_in(headers: Mapping[str, str], read: Callable[[], Awaitable[bytes]]) -> dict[str, Any]:
    """The body as a JSON object; `headers` has lower-cased names. The type is checked first."""
    check_content_type(headers.get("content-type"))
    return decode_json(await read())


async def json_body() -> dict[str, Any]:
    """The current Quart request's body as a JSON object."""
    check_content_type(request.headers.get("content-type"))
    return decode_json(await request.get_data(cache=False))


def api_key_in(headers: Mapping[str, str]) -> str | None:
    """The caller's key in `headers` (lower-cased names)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return headers.get("x-api-key")


def api_key_from_headers() -> str | None:
    """The caller's key on the current Quart request."""
    return api_key_in({k.lower(): v for k, v in reversed(list(request.headers.items()))})


def _plain(value: object) -> object:
    if isinstance(value, Decimal):  # echoed sampling parameters; money is sent as strings
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_plain)
