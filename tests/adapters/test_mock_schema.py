"""The Mock's minimal schema instances (adapters/providers/mock_schema.py): each keyword
rule, and a property test that the instance of generated schemas validates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.mock_schema import instance

CASES: list[tuple[Any, Any]] = [
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"a": ""}),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, {}),
    ({"properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}, {"n": 3}),
    ({"type": "integer", "exclusiveMinimum": 0}, 1),
    ({"type": "number", "maximum": -2.5}, -2.5),
    ({"type": "string", "minLength": 3}, "xxx"),
    ({"type": "string", "format": "date-time"}, "1970-01-01T00:00:00Z"),
    ({"type": "string", "enum": ["b", "a"]}, "b"),
    ({"const": 7}, 7),
    ({"type": ["null", "boolean"]}, False),
    ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 0),
    ({"type": "array", "items": {"type": "string"}, "minItems": 2}, ["", ""]),
    ({"type": "array", "items": {"type": "string"}}, []),
    (
        {"$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}},
                         "required": ["x"]}},
         "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"]},
        {"p": {"x": 0}},
    ),
    (
        {"allOf": [{"properties": {"a": {"type": "boolean"}}, "required": ["a"]},
                   {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
        {"a": False, "b": ""},
    ),
    ({}, {}),
    (None, None),
]


@pytest.mark.parametrize(("schema", "expected"), CASES)
def test_instance(schema: Any, expected: Any) -> None:
    assert instance(schema) == expected


def test_recursive_required_reference_stops() -> None:
    node = {"$ref": "#"}
    schema = {"type": "object", "properties": {"next": node}, "required": ["next"]}
    value = instance(schema)
    depth = 0
    while isinstance(value, dict) and "next" in value:
        value, depth = value["next"], depth + 1
    assert value in (None, {}) and depth > 10


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema["type"]
    if kind == "object":
        props = schema["properties"]
        return set(value) == set(schema["required"]) and all(
            _valid(value[k], props[k]) for k in value
        )
    if kind == "array":
        return len(value) >= schema.get("minItems", 0) and all(
            _valid(v, schema["items"]) for v in value
        )
    if kind == "string":
        return isinstance(value, str) and len(value) >= schema.get("minLength", 0)
    if kind == "integer":
        low = schema.get("minimum", -(10**9))
        return isinstance(value, int) and not isinstance(value, bool) and value >= low
    return isinstance(value, bool)


leaf = st.one_of(
    st.builds(lambda n: {"type": "string", "minLength": n}, st.integers(0, 5)),
    st.builds(lambda n: {"type": "integer", "minimum": n}, st.integers(-5, 5)),
    st.just({"type": "boolean"}),
)
schemas = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda props, k: {
                "type": "object", "properties": props, "required": sorted(props)[:k],
            },
            st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3),
            st.integers(0, 3),
        ),
        st.builds(lambda items, n: {"type": "array", "items": items, "minItems": n},
                  inner, st.integers(0, 2)),
    ),
    max_leaves=8,
)


@given(schemas)
def test_instance_validates(schema: dict[str, Any]) -> None:
    assert _valid(instance(schema), schema)
