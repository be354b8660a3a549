"""A `GatewayRequest` as plain JSON data, and back: how a stored request is kept.

Owns: the one encoding of a normalized request that leaves the process (a job's stored
request), so a job worker runs exactly what was admitted without any wire parser.

Rules:
- `encode(request)` gives only JSON types (dict, list, str, int, float, bool, None):
  money (`max_cost_usd`) as a decimal string, frozensets as sorted lists, tuples as
  lists; a `Decimal` inside pass-through JSON (tool schemas, `response_format`) becomes an
  int when integral, else a float.
- `decode(encode(r)) == r` for every request whose pass-through JSON has no Decimal.
- `decode` is strict: a missing field, a wrong type or an unknown part kind is a
  `ValueError` naming the field; it never coerces.
- `VERSION` is stored beside the data (`{"v": VERSION, ...}`); another version is a
  `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from core.model import (
    STRATEGIES,
    GatewayRequest,
    ImagePart,
    JSONValue,
    Message,
    Part,
    RoutingConstraints,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)

VERSION = 1
_ROLES = ("system", "user", "assistant", "tool")
_CHOICES = ("auto", "none", "required", "tool")
T = TypeVar("T")


def _plain(value: Any) -> JSONValue:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return cast(JSONValue, value)


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image", "url": part.url, "detail": part.detail}


def _message(m: Message) -> dict[str, Any]:
    return {
        "role": m.role,
        "content": [_part(p) for p in m.content],
        "tool_calls": [[c.id, c.name, c.arguments] for c in m.tool_calls],
        "tool_call_id": m.tool_call_id,
        "name": m.name,
    }


def encode(request: GatewayRequest) -> dict[str, Any]:
    r = request
    choice = r.tool_choice
    routing = r.routing
    return {
        "v": VERSION,
        "model": r.model,
        "messages": [_message(m) for m in r.messages],
        "max_output_tokens": r.max_output_tokens,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "stop": list(r.stop),
        "tools": [
            {"name": t.name, "description": t.description, "parameters": _plain(t.parameters)}
            for t in r.tools
        ],
        "tool_choice": None if choice is None else {"mode": choice.mode, "name": choice.name},
        "parallel_tool_calls": r.parallel_tool_calls,
        "response_format": _plain(r.response_format),
        "stream": r.stream,
        "routing": {
            "strategy": routing.strategy,
            "allow_providers": (
                None if routing.allow_providers is None else sorted(routing.allow_providers)
            ),
            "deny_providers": sorted(routing.deny_providers),
        },
        "max_cost_usd": None if r.max_cost_usd is None else str(r.max_cost_usd),
        "metadata": dict(r.metadata),
        "user": r.user,
    }


# ---- decoding ---------------------------------------------------------------------------


def _get(d: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], where: str) -> T:
    if name not in d:
        raise ValueError(f"stored request: '{where}{name}' is missing")
    value = d[name]
    numeric = kind in (int, float) or (isinstance(kind, tuple) and int in kind)
    if (numeric and isinstance(value, bool)) or not isinstance(value, kind):
        raise ValueError(f"stored request: '{where}{name}' has the wrong type")
    return cast(T, value)


def _opt(d: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], where: str) -> T | None:
    if d.get(name) is None:
        _get(d, name, object, where)  # present, even when null
        return None
    return _get(d, name, kind, where)


def _list(d: Mapping[str, Any], name: str, where: str, item: Callable[[Any, str], T]) -> tuple[T, ...]:
    values = _get(d, name, list, where)
    return tuple(item(v, f"{where}{name}[{i}].") for i, v in enumerate(values))


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"stored request: '{where.rstrip('.')}' must be an object")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"stored request: '{where.rstrip('.')}' must be a string")
    return value


def _decode_part(value: Any, where: str) -> Part:
    d = _obj(value, where)
    kind = _get(d, "type", str, where)
    if kind == "text":
        return TextPart(_get(d, "text", str, where))
    if kind == "image":
        return ImagePart(_get(d, "url", str, where), _opt(d, "detail", str, where))
    raise ValueError(f"stored request: '{where}type' is not a known part kind: {kind!r}")


def _decode_call(value: Any, where: str) -> ToolCall:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(x, str) for x in value)):
        raise ValueError(f"stored request: '{where.rstrip('.')}' must be [id, name, arguments]")
    return ToolCall(value[0], value[1], value[2])


def _decode_message(value: Any, where: str) -> Message:
    d = _obj(value, where)
    role = _get(d, "role", str, where)
    if role not in _ROLES:
        raise ValueError(f"stored request: '{where}role' is not a role: {role!r}")
    return Message(
        role=role,  # type: ignore[arg-type]
        content=_list(d, "content", where, _decode_part),
        tool_calls=_list(d, "tool_calls", where, _decode_call),
        tool_call_id=_opt(d, "tool_call_id", str, where),
        name=_opt(d, "name", str, where),
    )


def _decode_tool(value: Any, where: str) -> Tool:
    d = _obj(value, where)
    _get(d, "parameters", object, where)
    return Tool(_get(d, "name", str, where), _opt(d, "description", str, where), d["parameters"])


def _decode_choice(d: Mapping[str, Any]) -> ToolChoice | None:
    raw = _opt(d, "tool_choice", dict, "")
    if raw is None:
        return None
    mode = _get(raw, "mode", str, "tool_choice.")
    if mode not in _CHOICES:
        raise ValueError(f"stored request: 'tool_choice.mode' is not a mode: {mode!r}")
    return ToolChoice(mode, _opt(raw, "name", str, "tool_choice."))  # type: ignore[arg-type]


def _decode_routing(d: Mapping[str, Any]) -> RoutingConstraints:
    raw = _get(d, "routing", dict, "")
    strategy = _get(raw, "strategy", str, "routing.")
    if strategy not in STRATEGIES:
        raise ValueError(f"stored request: 'routing.strategy' is not a strategy: {strategy!r}")
    allow = raw.get("allow_providers")
    allowed = None if allow is None else frozenset(_list(raw, "allow_providers", "routing.", _str))
    return RoutingConstraints(
        strategy=strategy,
        allow_providers=allowed,
        deny_providers=frozenset(_list(raw, "deny_providers", "routing.", _str)),
    )


def _money(d: Mapping[str, Any]) -> Decimal | None:
    raw = _opt(d, "max_cost_usd", str, "")
    if raw is None:
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise ValueError("stored request: 'max_cost_usd' is not a decimal") from None


def _number(d: Mapping[str, Any], name: str) -> float | None:
    value = _opt(d, name, (int, float), "")
    return None if value is None else float(value)


def _metadata(d: Mapping[str, Any]) -> dict[str, str]:
    raw = _get(d, "metadata", dict, "")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("stored request: 'metadata' must map strings to strings")
    return dict(raw)


def decode(data: Mapping[str, Any]) -> GatewayRequest:
    """The request `encode` stored (strict: see the module rules)."""
    if data.get("v") != VERSION:
        raise ValueError(f"stored request: version {data.get('v')!r} is not {VERSION}")
    return GatewayRequest(
        model=_get(data, "model", str, ""),
        messages=_list(data, "messages", "", _decode_message),
        max_output_tokens=_opt(data, "max_output_tokens", int, ""),
        temperature=_number(data, "temperature"),
        top_p=_number(data, "top_p"),
        stop=_list(data, "stop", "", _str),
        tools=_list(data, "tools", "", _decode_tool),
        tool_choice=_decode_choice(data),
        parallel_tool_calls=_opt(data, "parallel_tool_calls", bool, ""),
        response_format=cast(JSONValue, _get(data, "response_format", object, "")),
        stream=_get(data, "stream", bool, ""),
        routing=_decode_routing(data),
        max_cost_usd=_money(data),
        metadata=_metadata(data),
        user=_opt(data, "user", str, ""),
    )
