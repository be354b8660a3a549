"""JSON on the wire: request bodies decoded strictly, responses encoded fast (msgspec).

Owns: turning request bytes into JSON values and JSON values into response text, for
every surface (HTTP bodies, WebSocket frames). What a body may hold is decided here,
once, before any route or wire codec sees it:

- It must be UTF-8 JSON (no byte order mark, no NaN/Infinity, no trailing data).
- Numbers with a fraction or exponent become `Decimal` (money is never float); each one
  must fit a double (`1e400` is refused), so it can be passed on to any provider.
- Integers may have at most 4,300 digits (Python's own limit; `max_tokens` and the like
  are bounded further by the wire codecs).
- Arrays and objects nest at most `MAX_DEPTH` levels.
- Text is valid Unicode: a lone UTF-16 surrogate (`"\\ud800"`) is refused, and so is NUL
  (`"\\u0000"`), which Postgres cannot store in `text` or `jsonb`.
- An object may not repeat a key.
Every refusal is an `InvalidJSON` (400, code `invalid_json`) that says what is wrong and,
where one field is at fault, names it in `param`.

Speed: msgspec decodes in C; the checks that need a walk over the value (depth, NUL,
duplicate keys) only run when a cheap scan of the bytes says they might fail: one
`translate` pass keeps the `[`, `{` and `:` that the depth and key counts need, and the
backslashes (with none, no escape needs looking for). Duplicate keys: in valid JSON every `:` outside a string ends a key, and msgspec re-encodes strings
without escaping `:`, so the body holds a repeated key exactly when it has more `:` than
the re-encoded value (unless it writes a colon as `\\u003a`: then the exact, slower
stdlib scan decides). Figures: docs/performance.md, section "JSON".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from core.errors import InvalidJSON

MAX_DEPTH = 64
_LOW_ESCAPE = b"\\u00"
_NUL_ESCAPE = b"\\u0000"
_COLON_ESCAPE = b"\\u003"
# every byte but `[`, `{`, `:` and `\` (deleted by `bytes.translate`, which leaves those)
_NOT_MARKS = bytes(b for b in range(256) if b not in b"[{:\\")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _fraction(text: str) -> Decimal:
    """msgspec's hook for numbers with a fraction or exponent: exact, and double-sized."""
    if math.isinf(float(text)):
        raise ValueError("a number too large")
    return Decimal(text)


_DECODER = msgspec.json.Decoder(float_hook=_fraction)
_ENCODER = msgspec.json.Encoder(decimal_format="number")


# Compact UTF-8 JSON; `Decimal` is written as the number it holds. The encoder's own method,
# no frame of ours around it (a streamed chat chunk's text is encoded with it).
encode: Callable[[Any], bytes] = _ENCODER.encode


def to_json(value: Any) -> str:
    return _ENCODER.encode(value).decode()


def decode_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or `InvalidJSON` naming what is wrong with it."""
    if not raw.strip():
        raise InvalidJSON("The request body is empty; send a JSON object")
    value = _decode(raw)
    if not isinstance(value, dict):
        raise InvalidJSON("The request body must be a JSON object")
    marks = raw.translate(None, _NOT_MARKS)  # one scan keeps the few `[`, `{`, `:` and `\`
    colons, backslashes = marks.count(b":"), marks.count(b"\\")
    if len(marks) - colons - backslashes > MAX_DEPTH:
        _check_depth(value)
    escaped = backslashes > 0 and _LOW_ESCAPE in raw  # one scan for the two escapes below
    if escaped and _NUL_ESCAPE in raw:
        _check_no_nul(value)
    if (escaped and _COLON_ESCAPE in raw) or colons != _ENCODER.encode(value).count(b":"):
        _check_no_duplicates(raw)
    return value


def _decode(raw: bytes) -> Any:
    try:
        return _DECODER.decode(raw)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.ValidationError as err:  # an integer past 4,300 digits, or _fraction's refusal
        what = (
            "an integer too large (more than 4300 digits)"
            if "Integer" in str(err)
            else "a number too large for a 64-bit float"
        )
        raise InvalidJSON(f"The request body holds {what}") from None
    except msgspec.DecodeError as err:
        raise _unreadable(raw, err) from None


def _unreadable(raw: bytes, err: msgspec.DecodeError) -> InvalidJSON:
    if _SURROGATE_ESCAPE.search(raw):
        where = _surrogate_path(raw)
        if where is not None:
            named = f"'{where}'" if where else "a key"
            return InvalidJSON(
                f"{named} holds a lone UTF-16 surrogate (such as \\ud800); text must be "
                "valid Unicode",
                param=where or None,
            )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidJSON("The request body is not UTF-8")
    detail = str(err).removeprefix("JSON is malformed: ")
    return InvalidJSON(f"The request body is not valid JSON: {detail}")


def _surrogate_path(raw: bytes) -> str | None:
    """Where a lone surrogate sits (stdlib json accepts them); None if it is not the fault."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    for path, text in _strings(value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return path
    return None


def _too_deep() -> InvalidJSON:
    return InvalidJSON(f"The request body nests arrays and objects deeper than {MAX_DEPTH} levels")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _strings(value: Any) -> list[tuple[str, str]]:
    """Every key and string in `value` with its path (`messages[0].content`); keys have
    the path of the object holding them."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            found.append((path, item))
        elif isinstance(item, dict):
            for key, inner in item.items():
                found.append((path, key))
                stack.append((inner, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(item))
    return found


def _check_no_nul(value: Any) -> None:
    for path, text in _strings(value):
        if "\x00" in text:
            named = f"'{path}'" if path else "A key"
            raise InvalidJSON(
                f"{named} holds a NUL character (\\u0000), which the gateway does not accept",
                param=path or None,
            )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJSON(f"Duplicate key '{key}' in the JSON body", param=key)
        out[key] = value
    return out


def _check_no_duplicates(raw: bytes) -> None:
    """The exact (stdlib) scan; runs only when the fast count says a key may repeat."""
    json.loads(raw, parse_float=Decimal, object_pairs_hook=_no_duplicates)
