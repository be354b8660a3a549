"""Token estimates without a tokenizer: fast, documented, and leaning high.

Owns: how many input tokens a request is assumed to use before the provider says, for
rate limits (tokens per minute), budget reservations and context-window checks. The
provider's reported usage replaces the estimate afterwards.

Rules (the estimate should over-reserve rather than under-reserve):
- Text: `max(ceil(utf8_bytes / 3), pieces)` where `pieces` counts runs of word
  characters and single other non-space characters (`\\w+|[^\\w\\s]`). Real BPE
  tokenizers average about 4 bytes per token on English, so bytes/3 leans high; `pieces`
  covers punctuation-dense text such as code, where BPE rarely merges across a word /
  symbol boundary. Both terms never shrink when text is appended.
- Each message adds `MESSAGE_OVERHEAD` (role and separators); each image part a fixed
  `IMAGE_TOKENS` (the top of Anthropic's ~1.15 MP / 750 rule; OpenAI high detail is
  lower) whatever its detail or size: a data URL's base64 is never counted as text.
- Tool calls in assistant messages count their name and arguments plus
  `TOOL_CALL_OVERHEAD`; `name` and `tool_call_id` count as text.
- Tool definitions count as the compact JSON text of {name, description, parameters}
  plus `TOOL_OVERHEAD` each; `response_format` counts as its JSON text.
- Every request adds `REPLY_PRIMING` (the tokens that start the assistant's reply).
The cost is linear in the request's size: one encode and one regex scan per text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from core.model import GatewayRequest, ImagePart, JSONValue, Message, TextPart

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
IMAGE_TOKENS = 1600
TOOL_CALL_OVERHEAD = 4
TOOL_OVERHEAD = 8
BYTES_PER_TOKEN = 3

_PIECES = re.compile(r"\w+|[^\w\s]")
_ASCII_WORD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"


def _pieces_bound(ascii_text: bytes) -> int:
    r"""An upper bound on the pieces of ASCII text, from two byte counts (no regex).

    Of its `n` non-word bytes (what `\w` does not match), `s` are spaces or newlines.
    A piece is a word run or one symbol; word runs are separated by non-word bytes, so
    there are at most `n + 1` of them, and at most `n - s` symbols."""
    others = ascii_text.translate(None, _ASCII_WORD)  # the non-word bytes: one pass
    s = others.count(b" ") + others.count(b"\n")  # over the few left, not the text again
    return 2 * len(others) - s + 1


def estimate_text_tokens(text: str) -> int:
    """An upper-leaning token count for `text`: max(ceil(utf8 bytes / 3), pieces)."""
    if not text:
        return 0
    encoded = text.encode("utf-8", "surrogatepass")
    by_bytes = math.ceil(len(encoded) / BYTES_PER_TOKEN)
    # Prose has far fewer pieces than bytes / 3: when the cheap bound already says so, the
    # answer is `by_bytes` and the regex scan (most of this function's time) is skipped.
    if encoded.isascii() and _pieces_bound(encoded) <= by_bytes:
        return by_bytes
    pieces = len(_PIECES.findall(text))  # findall: no match objects (2-3x finditer's speed)
    return max(by_bytes, pieces)


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def _json_text(value: JSONValue) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_json_default)


def _message_tokens(message: Message) -> int:
    total = MESSAGE_OVERHEAD
    for part in message.content:
        if isinstance(part, TextPart):
            total += estimate_text_tokens(part.text)
        elif isinstance(part, ImagePart):
            total += IMAGE_TOKENS
    for call in message.tool_calls:
        total += TOOL_CALL_OVERHEAD + estimate_text_tokens(call.name)
        total += estimate_text_tokens(call.arguments)
    for extra in (message.name, message.tool_call_id):
        if extra:
            total += estimate_text_tokens(extra)
    return total


def estimate_request_tokens(request: GatewayRequest) -> int:
    """An upper-leaning estimate of the input tokens `request` will be billed for."""
    total = REPLY_PRIMING + sum(_message_tokens(m) for m in request.messages)
    for tool in request.tools:
        schema: JSONValue = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
        total += TOOL_OVERHEAD + estimate_text_tokens(_json_text(schema))
    if request.response_format is not None:
        total += estimate_text_tokens(_json_text(request.response_format))
    return total
