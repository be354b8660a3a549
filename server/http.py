"""Reading requests: JSON bodies decoded strictly, keys found in headers.

Owns: how a request body becomes a JSON object (a `Content-Type` other than JSON is a
415; none at all is accepted; what the JSON may hold is `server.json_codec`'s rule:
numbers with a fraction become `Decimal`, so money is never float; duplicate keys, lone
surrogates, NUL and deep nesting are refused; the top level must be an object) and where
the caller's API key is read from (`Authorization: Bearer`, or `x-api-key` as Anthropic
clients send it). `decode_json` and `to_json` are `server.json_codec`'s, re-exported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from quart import request

from core.errors import UnsupportedMediaType
from server.json_codec import decode_object
from server.json_codec import to_json as to_json

decode_json: Final = decode_object  # the name the routes use


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
    return decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))


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
