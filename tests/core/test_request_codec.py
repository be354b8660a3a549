"""The stored form of a request round-trips exactly and is refused when it is not sound."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import request_codec
from core.model import (
    STRATEGIES,
    GatewayRequest,
    ImagePart,
    Message,
    RoutingConstraints,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)

text = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
parts = st.one_of(st.builds(TextPart, text), st.builds(ImagePart, text, st.none() | text))
messages = st.builds(
    Message,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.lists(parts, max_size=3).map(tuple),
    tool_calls=st.lists(st.builds(ToolCall, text, text, text), max_size=2).map(tuple),
    tool_call_id=st.none() | text,
    name=st.none() | text,
)
requests = st.builds(
    GatewayRequest,
    model=text,
    messages=st.lists(messages, max_size=3).map(tuple),
    max_output_tokens=st.none() | st.integers(1, 10**6),
    temperature=st.none() | st.floats(0, 2),
    top_p=st.none() | st.floats(0, 1),
    stop=st.lists(text, max_size=2).map(tuple),
    tools=st.lists(st.builds(Tool, text, st.none() | text, json_values), max_size=2).map(tuple),
    tool_choice=st.none() | st.builds(ToolChoice, st.sampled_from(["auto", "none", "required"])),
    parallel_tool_calls=st.none() | st.booleans(),
    response_format=json_values,
    stream=st.booleans(),
    routing=st.builds(
        RoutingConstraints,
        strategy=st.sampled_from(STRATEGIES),
        allow_providers=st.none() | st.frozensets(text, max_size=2),
        deny_providers=st.frozensets(text, max_size=2),
    ),
    max_cost_usd=st.none() | st.decimals(min_value=0, max_value=100, places=8),
    metadata=st.dictionaries(text, text, max_size=2),
    user=st.none() | text,
)


@given(requests)
def test_a_request_round_trips_through_json(request: GatewayRequest) -> None:
    stored = json.loads(json.dumps(request_codec.encode(request)))
    assert request_codec.decode(stored) == request


def test_decimals_in_pass_through_json_become_numbers() -> None:
    request = GatewayRequest(
        model="m", messages=(), temperature=0.7,
        tools=(Tool("t", None, {"type": "number", "maximum": Decimal("0.5"), "minimum": Decimal(2)}),),
    )
    stored = json.loads(json.dumps(request_codec.encode(request)))
    assert stored["tools"][0]["parameters"] == {"type": "number", "maximum": 0.5, "minimum": 2}
    assert request_codec.decode(stored).temperature == 0.7


def _stored(**changes: Any) -> dict[str, Any]:
    base = request_codec.encode(GatewayRequest(model="m", messages=(Message("user", (TextPart("x"),)),)))
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"v": 99}, "version"),
        ({"model": 3}, "'model'"),
        ({"stream": 1}, "'stream'"),
        ({"max_output_tokens": True}, "'max_output_tokens'"),
        ({"max_cost_usd": "lots"}, "max_cost_usd"),
        ({"messages": [{"role": "robot", "content": [], "tool_calls": [],
                        "tool_call_id": None, "name": None}]}, "role"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}], "tool_calls": [],
                        "tool_call_id": None, "name": None}]}, "part kind"),
        ({"metadata": {"a": 1}}, "metadata"),
    ],
)
def test_a_bad_stored_request_is_refused_naming_the_field(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        request_codec.decode(_stored(**changes))
    missing = _stored()
    del missing["routing"]
    with pytest.raises(ValueError, match="routing"):
        request_codec.decode(missing)
