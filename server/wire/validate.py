"""Strict, friendly checks on decoded JSON request bodies, shared by every wire codec.

Owns: the primitive validations (types, ranges, lengths, known keys) every codec needs,
so `responses`, `openai_chat` and `anthropic_messages` never repeat a type check.

Rules:
- Every failure raises `core.errors.InvalidRequest(message, param=path)`, where `path`
  names the field as a dotted / indexed path (`messages[2].content[0].text`). Nothing
  else escapes: no KeyError, TypeError or ValueError reaches the caller.
- Bodies are decoded by `server.json_codec`, so JSON numbers with a fraction or
  exponent arrive as `Decimal`; plain floats (tests, WebSocket frames decoded
  elsewhere) are accepted too. `bool` is never a number.
- Integers (token counts, `n`) are at most `MAX_INTEGER` (2**31 - 1) unless a smaller
  maximum is given: no provider accepts more, and a larger one must not be forwarded.
- Money (`max_cost_usd`) is parsed exactly to `Decimal` (a float goes through its
  shortest repr, which is the text the client wrote); sampling numbers become `float`.
- Free-form JSON passed through to providers (tool schemas) is copied with every
  `Decimal` turned into a float (`plain_json`), so adapters can `json.dumps` it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import InvalidRequest

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_INTEGER = 2**31 - 1


def at(path: str, key: str) -> str:
    """`at("messages[0]", "content")` -> `"messages[0].content"`; the root path is ""."""
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _finite(value: float | Decimal) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param or None)


def wrong_type(value: object, expected: str, param: str) -> InvalidRequest:
    return fail(f"'{param}' must be {expected}, got {_kind(value)}", param)


def obj(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        what = "the request body" if not param else f"'{param}'"
        raise fail(f"{what} must be a JSON object, got {_kind(value)}", param)
    for key in value:
        if not isinstance(key, str):
            raise fail(f"'{param}' has a non-string key", param)
    return value


def array(
    value: object, param: str, *, min_items: int = 0, max_items: int | None = None
) -> list[Any]:
    if not isinstance(value, list):
        raise wrong_type(value, "an array", param)
    if len(value) < min_items:
        need = "must not be empty" if min_items == 1 else f"needs at least {min_items} items"
        raise fail(f"'{param}' {need}", param)
    if max_items is not None and len(value) > max_items:
        raise fail(f"'{param}' may hold at most {max_items} items, got {len(value)}", param)
    return value


def string(value: object, param: str, *, nonempty: bool = False, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise wrong_type(value, "a string", param)
    if nonempty and not value:
        raise fail(f"'{param}' must not be empty", param)
    if max_len is not None and len(value) > max_len:
        raise fail(f"'{param}' may be at most {max_len} characters long", param)
    return value


def boolean(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise wrong_type(value, "a boolean (true or false)", param)
    return value


def integer(
    value: object, param: str, *, minimum: int | None = None, maximum: int = MAX_INTEGER
) -> int:
    if isinstance(value, Decimal | float) and not isinstance(value, bool):
        fraction: Decimal | float = value
        if _finite(fraction) and abs(float(fraction)) < 1e18 and fraction == int(fraction):
            value = int(fraction)  # "5.0" arrives as Decimal("5.0"): accept it as 5
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, "an integer", param)
    return _in_range(value, param, minimum, maximum)


def _in_range(value: int, param: str, minimum: int | None, maximum: int | None) -> int:
    if minimum is not None and value < minimum:
        raise fail(f"'{param}' must be at least {minimum}, got {value}", param)
    if maximum is not None and value > maximum:
        raise fail(f"'{param}' must be at most {maximum}, got {value}", param)
    return value


def number(value: object, param: str, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise wrong_type(value, "a number", param)
    if not _finite(value):
        raise fail(f"'{param}' must be a finite number", param)
    if not minimum <= value <= maximum:
        raise fail(f"'{param}' must be between {minimum:g} and {maximum:g}, got {value}", param)
    return float(value)


def money(value: object, param: str) -> Decimal:
    """A positive USD amount, exact: Decimal, int, float (via its repr) or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise wrong_type(value, "a positive number of US dollars", param)
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise fail(
            f"'{param}' must be a decimal number such as \"0.05\", got {value!r}", param
        ) from None
    if not amount.is_finite() or amount <= 0:
        raise fail(f"'{param}' must be a positive number of US dollars, got {value}", param)
    return amount


def string_list(
    value: object, param: str, *, min_items: int = 0, max_items: int | None = None
) -> tuple[str, ...]:
    items = array(value, param, min_items=min_items, max_items=max_items)
    return tuple(string(item, index(param, i), nonempty=True) for i, item in enumerate(items))


def check_keys(
    body: Mapping[str, Any],
    param: str,
    *,
    allowed: Iterable[str],
    ignored: Iterable[str] = (),
    required: Iterable[str] = (),
) -> None:
    """Reject keys outside `allowed` | `ignored` (suggesting a near match) and missing ones."""
    known = set(allowed) | set(ignored)
    for key in body:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise fail(f"Unknown parameter '{at(param, key)}'{hint}", at(param, key))
    for key in required:
        if key not in body:
            raise fail(f"Missing required parameter '{at(param, key)}'", at(param, key))


def present(body: Mapping[str, Any], key: str) -> bool:
    """A key counts as given unless absent or JSON null (clients send explicit nulls)."""
    return body.get(key) is not None


def one_of(value: object, choices: Iterable[str], param: str) -> str:
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise fail(f"'{param}' must be one of {listed}, got {value!r}", param)
    return value


def metadata(value: object, param: str) -> dict[str, str]:
    """OpenAI-style metadata: at most 16 string pairs, keys <= 64 and values <= 512 chars."""
    pairs = obj(value, param)
    if len(pairs) > MAX_METADATA_PAIRS:
        raise fail(f"'{param}' may hold at most {MAX_METADATA_PAIRS} pairs", param)
    out: dict[str, str] = {}
    for key, item in pairs.items():
        if len(key) > MAX_METADATA_KEY:
            raise fail(f"'{param}' keys may be at most {MAX_METADATA_KEY} characters", param)
        out[key] = string(item, at(param, key), max_len=MAX_METADATA_VALUE)
    return out


def plain_json(value: Any) -> Any:
    """A copy of decoded JSON with Decimals as floats (for schemas passed to providers)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value
