"""Request pieces every surface shares: the gateway's `constraints` extension, tool
definitions, structured-output formats, and image data URLs.

Owns: how `constraints: {routing: {strategy, allow_providers, deny_providers}, budget:
{max_cost_usd}}` becomes `RoutingConstraints` + `max_cost_usd`, and the checks on tool
names and JSON schemas that OpenAI chat, Responses and Anthropic tools all need.

Rules: failures raise `InvalidRequest` with the dotted path of the field (see
`server.wire.validate`). Unknown keys inside `constraints` are rejected.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from core.model import STRATEGIES, JSONValue, RoutingConstraints, Tool, ToolChoice
from server.wire import validate as v

# Light checks on passed-through OpenAI fields, so a wrong type is a 400 naming the field
# here rather than the provider's 400 (or nothing, when a provider drops the field).
PASSTHROUGH_CHECKS: dict[str, Any] = {
    "top_logprobs": lambda x, p: v.integer(x, p, minimum=0, maximum=20),
    "logprobs": v.boolean,
    "seed": lambda x, p: v.integer(x, p),
    "frequency_penalty": lambda x, p: v.number(x, p, minimum=-2, maximum=2),
    "presence_penalty": lambda x, p: v.number(x, p, minimum=-2, maximum=2),
    "max_tool_calls": lambda x, p: v.integer(x, p, minimum=1),
    "prompt_cache_key": v.string,
    "prompt_cache_retention": v.string,
    "service_tier": v.string,
    "store": v.boolean,
}

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FORMAT_TYPES = ("text", "json_object", "json_schema")


def constraints(value: object, param: str) -> tuple[RoutingConstraints, Decimal | None]:
    """The gateway extension; `null` or absent parts mean the defaults."""
    if value is None:
        return RoutingConstraints(), None
    body = v.obj(value, param)
    v.check_keys(body, param, allowed=("routing", "budget"))
    routing = RoutingConstraints()
    if v.present(body, "routing"):
        routing = _routing(body["routing"], v.at(param, "routing"))
    max_cost: Decimal | None = None
    if v.present(body, "budget"):
        p = v.at(param, "budget")
        budget = v.obj(body["budget"], p)
        v.check_keys(budget, p, allowed=("max_cost_usd",))
        if v.present(budget, "max_cost_usd"):
            max_cost = v.money(budget["max_cost_usd"], v.at(p, "max_cost_usd"))
    return routing, max_cost


def _routing(value: object, param: str) -> RoutingConstraints:
    body = v.obj(value, param)
    v.check_keys(body, param, allowed=("strategy", "allow_providers", "deny_providers"))
    strategy = "cost"
    if v.present(body, "strategy"):
        strategy = v.one_of(body["strategy"], STRATEGIES, v.at(param, "strategy"))
    allow: frozenset[str] | None = None
    if v.present(body, "allow_providers"):
        p = v.at(param, "allow_providers")
        allow = frozenset(v.string_list(body["allow_providers"], p, min_items=1))
    deny: frozenset[str] = frozenset()
    if v.present(body, "deny_providers"):
        deny = frozenset(v.string_list(body["deny_providers"], v.at(param, "deny_providers")))
    return RoutingConstraints(
        strategy=strategy,  # type: ignore[arg-type]  # checked by one_of
        allow_providers=allow,
        deny_providers=deny,
    )


def passthrough(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The given `keys` of `body` (null means absent), checked where a check is known."""
    out: dict[str, Any] = {}
    for key in keys:
        if v.present(body, key):
            check = PASSTHROUGH_CHECKS.get(key)
            if check is not None:
                check(body[key], key)
            out[key] = v.plain_json(body[key])
    return out


def tool_name(value: object, param: str) -> str:
    name = v.string(value, param, nonempty=True)
    if not TOOL_NAME.match(name):
        raise v.fail(f"'{param}' must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'", param)
    return name


def schema(value: object, param: str) -> JSONValue:
    """A JSON Schema passed through untouched (Decimals made floats); must be an object."""
    return v.plain_json(v.obj(value, param))  # type: ignore[no-any-return]


def unique_tools(tools: list[Tool], param: str, name_key: str = "name") -> tuple[Tool, ...]:
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.name in seen:
            where = v.at(v.index(param, i), name_key)
            raise v.fail(f"Tool name '{tool.name}' is defined twice", where)
        seen.add(tool.name)
    return tuple(tools)


def check_tool_choice(
    choice: ToolChoice | None, tools: tuple[Tool, ...], param: str, name_param: str
) -> None:
    """A forced or required tool needs tools, and a named one must be among them."""
    if choice is None or choice.mode in ("auto", "none"):
        return
    if not tools:
        raise v.fail(f"'{param}' asks for a tool call but no tools were given", param)
    if choice.mode == "tool" and choice.name not in {t.name for t in tools}:
        raise v.fail(
            f"'{name_param}' names tool '{choice.name}', which is not in tools", name_param
        )


def json_schema_format(body: dict[str, Any], param: str) -> dict[str, Any]:
    """`{name, schema?, strict?, description?}` checked; returns the chat `json_schema` value."""
    out: dict[str, Any] = {"name": tool_name(body.get("name"), v.at(param, "name"))}
    if v.present(body, "schema"):
        out["schema"] = schema(body["schema"], v.at(param, "schema"))
    if v.present(body, "strict"):
        out["strict"] = v.boolean(body["strict"], v.at(param, "strict"))
    if v.present(body, "description"):
        out["description"] = v.string(body["description"], v.at(param, "description"))
    return out


def chat_response_format(value: object, param: str) -> JSONValue:
    """OpenAI chat `response_format`, the shape the core keeps (`{"type": ...}`)."""
    body = v.obj(value, param)
    kind = v.one_of(body.get("type"), FORMAT_TYPES, v.at(param, "type"))
    if kind != "json_schema":
        v.check_keys(body, param, allowed=("type",))
        return {"type": kind}
    v.check_keys(body, param, allowed=("type", "json_schema"), required=("json_schema",))
    p = v.at(param, "json_schema")
    inner = v.obj(body["json_schema"], p)
    v.check_keys(inner, p, allowed=("name", "schema", "strict", "description"), required=("name",))
    return {"type": "json_schema", "json_schema": json_schema_format(inner, p)}


MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def split_data_url(url: str) -> tuple[str, str] | None:
    """`data:<type>;base64,<data>` -> (type, data); None for anything else."""
    match = re.match(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", url, re.DOTALL)
    return (match.group(1), match.group(2)) if match else None
