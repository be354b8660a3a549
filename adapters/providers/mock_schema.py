"""The Mock's minimal JSON instance of a JSON Schema: what it answers for structured output
and passes as tool-call arguments.

Owns: one rule, `instance(schema)`, deterministic and minimal: the smallest value of the
first usable shape that validates against `schema` for the keywords frameworks emit
(pydantic, zod, the SDKs' strict schemas). Per keyword:
- `$ref` to a local JSON pointer (`#/$defs/X`, `#/definitions/X`) is followed; `const`
  wins, then the first of `enum`;
- `anyOf` / `oneOf`: the first branch that is not `{"type": "null"}` (else null);
  `allOf`: the branches merged (properties and required lists joined);
- `type` (the first non-null of a list; inferred as object from `properties` /
  `required`, as array from `items`; an untyped schema gives an empty object):
  object -> every `required` property, nothing else; array -> `minItems` items (each
  `prefixItems[i]`, else `items`); string -> "" padded with "x" to `minLength`, or a
  fixed example for the formats `date-time`, `date`, `time`, `email`, `uri`, `uuid`,
  `ipv4`, `hostname`; integer / number -> 0 moved into `minimum` / `maximum` (exclusive
  bounds by one); boolean -> false; null -> null.
- `pattern`, `multipleOf` and `not` are not honoured (no minimal rule exists for them).
Nesting deeper than `MAX_DEPTH` (a recursive schema with required self-references) gives
null there. Pure: no I/O, never raises on odd schemas (unknown shapes give null).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "mock@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def instance(schema: object) -> Any:
    """The minimal value valid against `schema` (see the module rules)."""
    return _value(schema, schema, 0)


def _resolve(node: object, root: object, depth: int) -> object:
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and depth < MAX_DEPTH:
        target: object = root
        for token in node["$ref"].removeprefix("#").strip("/").split("/"):
            if not token:
                continue
            key = token.replace("~1", "/").replace("~0", "~")
            target = target.get(key) if isinstance(target, Mapping) else None
        node, depth = target, depth + 1
    return node


def _merged(branches: list[object], root: object, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {"properties": {}, "required": []}
    for branch in branches:
        b = _resolve(branch, root, depth)
        if not isinstance(b, Mapping):
            continue
        if isinstance(b.get("allOf"), list):
            b = {**b, **_merged(b["allOf"], root, depth + 1)}
        for key, value in b.items():
            if key == "properties" and isinstance(value, Mapping):
                out["properties"].update(value)
            elif key == "required" and isinstance(value, list):
                out["required"] += [r for r in value if r not in out["required"]]
            elif key not in ("allOf", "properties", "required"):
                out.setdefault(key, value)
    return out


def _type(node: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        usable = [k for k in kinds if k != "null"]
        return usable[0] if usable else (kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    if "properties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return None


def _value(schema: object, root: object, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return None
    node = _resolve(schema, root, depth)
    if not isinstance(node, Mapping):
        return {} if node is True else None
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if _resolve(b, root, depth) != {"type": "null"}]
            return _value(usable[0], root, depth + 1) if usable else None
    if isinstance(node.get("allOf"), list):
        return _value(_merged([node, *node["allOf"]], root, depth), root, depth + 1)
    return _typed(node, root, depth)


def _typed(node: Mapping[str, Any], root: object, depth: int) -> Any:
    kind = _type(node)
    if kind == "object" or kind is None:
        props = node.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = node.get("required")
        names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        return {name: _value(props.get(name, {}), root, depth + 1) for name in names}
    if kind == "array":
        return _array(node, root, depth)
    if kind == "string":
        return _string(node)
    if kind in ("integer", "number"):
        return _number(node, kind)
    if kind == "boolean":
        return False
    return None


def _array(node: Mapping[str, Any], root: object, depth: int) -> list[Any]:
    count = node.get("minItems")
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    prefix = node.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = node.get("items", {})
    return [
        _value(prefix[i] if i < len(prefix) else items, root, depth + 1)
        for i in range(min(count, MAX_DEPTH))
    ]


def _string(node: Mapping[str, Any]) -> str:
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in FORMATS:
        return FORMATS[fmt]
    length = node.get("minLength")
    return "x" * length if isinstance(length, int) and not isinstance(length, bool) else ""


def _bound(node: Mapping[str, Any], key: str) -> float | None:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _number(node: Mapping[str, Any], kind: str) -> int | float:
    low, high = _bound(node, "minimum"), _bound(node, "maximum")
    xlow, xhigh = _bound(node, "exclusiveMinimum"), _bound(node, "exclusiveMaximum")
    step = 1
    value: float = 0
    if low is not None and value < low:
        value = low
    if xlow is not None and value <= xlow:
        value = xlow + step
    if high is not None and value > high:
        value = high
    if xhigh is not None and value >= xhigh:
        value = xhigh - step
    if kind == "integer":
        return int(value) if float(value).is_integer() else int(value) + (1 if value > 0 else 0)
    return int(value) if float(value).is_integer() else value
