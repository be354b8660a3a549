"""`python -m bench.json_codec`: JSON decode and encode on realistic chat bodies, per codec.

Times, on one core, the gateway's request decoder (`server.json_codec.decode_object`:
msgspec plus its checks) against the stdlib decoder it replaced (`json.loads` with
`parse_float=Decimal` and a duplicate-key hook), plain stdlib, and the bare decoders of
msgspec and orjson (orjson only if installed: it is not a dependency); then encoding a
chat completion with each. The request is a ~2 KB OpenAI chat body (system prompt, a
tool call and its result, one tool with a JSON schema, sampling numbers); the response
a ~1.5 KB `chat.completion`. Prints microseconds per operation and operations per second:
the best of `--rounds` timings of `--number` calls, taken round-robin across the codecs.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from server.json_codec import decode_object, to_json

SYSTEM = (
    "You are a careful assistant for a travel agency. Answer briefly, cite the booking "
    "reference when you have one, never invent prices, and say when a connection needs "
    "a change of train. Prices are in euros and include every passenger. "
)
ANSWER = (
    "There are two direct trains next Friday. The 07:12 departure arrives in Milano "
    "Centrale at 12:40 and carries bikes: 89.50 EUR for both of you. The 09:30 is cheaper "
    "(74.00 EUR) but has no bike space, so it will not work with your bike. "
)


def chat_body() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "from": {"type": "string", "description": "departure city"},
            "to": {"type": "string", "description": "arrival city"},
            "date": {"type": "string", "format": "date"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            "bike": {"type": "boolean"},
            "max_price": {"type": "number", "minimum": 0.5, "multipleOf": 0.01},
        },
        "required": ["from", "to", "date"],
    }
    arguments = {"from": "Lyon", "to": "Milano", "date": "2026-12-04", "passengers": 2}
    found = [{"dep": "07:12", "arr": "12:40", "price_eur": 89.5, "bike": True}]
    return {
        "model": "gpt-4.1-mini",
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 512,
        "stream": False,
        "messages": [
            {"role": "system", "content": SYSTEM * 3},
            {"role": "user", "content": "A train from Lyon to Milan next Friday, two adults "
             "and one bike: what are my options, and what does each cost?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "search_trains", "arguments": json.dumps(arguments)},
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(found)},
        ],
        "tools": [{"type": "function", "function": {
            "name": "search_trains",
            "description": "Search train connections between two cities on a date.",
            "parameters": schema,
        }}],
        "metadata": {"session": "abc123", "channel": "web"},
    }  # fmt: skip


def chat_completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-8f1d2c9a4b",
        "object": "chat.completion",
        "created": 1764620000,
        "model": "gpt-4.1-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER * 4, "tool_calls": None},
            "finish_reason": "stop",
            "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": 412, "completion_tokens": 233, "total_tokens": 645,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "gateway": {
            "request_id": "req_01HZX3", "provider": "openai",
            "deployment": "openai/gpt-4.1-mini", "attempts": 1, "cost_usd": "0.0005372000",
        },
    }  # fmt: skip


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(key)
        out[key] = value
    return out


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def cases(raw: bytes, response: dict[str, Any]) -> list[tuple[str, Callable[[], object]]]:
    bare = msgspec.json.Decoder(float_hook=Decimal)
    encoder = msgspec.json.Encoder(decimal_format="number")
    found: list[tuple[str, Callable[[], object]]] = [
        ("decode: stdlib, Decimal + duplicate hook (before)",
         lambda: json.loads(raw, parse_float=Decimal, object_pairs_hook=_no_duplicates)),
        ("decode: stdlib, plain", lambda: json.loads(raw)),
        ("decode: msgspec, bare (float_hook=Decimal)", lambda: bare.decode(raw)),
        ("decode: gateway (msgspec + checks)", lambda: decode_object(raw)),
        ("encode: stdlib json.dumps (before)", lambda: json.dumps(
            response, separators=(",", ":"), ensure_ascii=False, default=_plain)),
        ("encode: msgspec, bytes", lambda: encoder.encode(response)),
        ("encode: gateway to_json (msgspec, str)", lambda: to_json(response)),
    ]  # fmt: skip
    try:
        import orjson
    except ImportError:
        print("orjson is not installed: its rows are skipped")
        return found
    found.insert(4, ("decode: orjson, bare (floats, no duplicate check)", lambda: orjson.loads(raw)))
    found.append(("encode: orjson, bytes", lambda: orjson.dumps(response)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2_000, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=40, help="timings per codec")
    args = parser.parse_args()
    raw = json.dumps(chat_body()).encode()
    response = chat_completion()
    assert decode_object(raw) == json.loads(raw, parse_float=Decimal)
    print(f"request body {len(raw)} bytes, response {len(to_json(response))} bytes")
    found = cases(raw, response)
    best = {name: float("inf") for name, _ in found}
    for _ in range(args.rounds):  # round-robin, so load on a shared machine hits all alike
        for name, fn in found:
            best[name] = min(best[name], timeit.timeit(fn, number=args.number) / args.number)
    for name, seconds in best.items():
        print(f"{name:52} {seconds * 1e6:7.2f} us  {1 / seconds:>10,.0f} /s")


if __name__ == "__main__":
    main()
