"""`server.json_codec`: the request decoder agrees with the exact stdlib decoder.

Property: for any JSON text whose top level is an object — keys repeated or not, colons
and escapes (`\\u003a` among them) inside strings, any spacing — `decode_object` refuses
it (naming a repeated key) exactly when some object repeats a key, and otherwise returns
what `json.loads(..., parse_float=Decimal)` returns. This checks the fast duplicate test
(counting `:`) against the slow one it stands for. Plus the fixed refusals.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidJSON
from server.json_codec import MAX_DEPTH, decode_object, to_json

# A JSON document as a tree whose objects are lists of (key, value) pairs, so a key can
# repeat; rendered to text by `render`.
texts = st.text(alphabet=st.sampled_from('ab:"\\é\u2028 {}[],:\x01'), max_size=6)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
trees = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda xs: ("array", xs))
        | st.lists(st.tuples(st.sampled_from(["a", "b", "a:b", ":"]) | texts, inner), max_size=4)
        .map(lambda pairs: ("object", pairs))
    ),
    max_leaves=10,
)
top = st.lists(st.tuples(st.sampled_from(["a", "b", ":"]) | texts, trees), max_size=4)


def render(tree: Any, ascii_only: bool, space: str) -> str:
    if isinstance(tree, tuple) and tree[0] == "array":
        return "[" + f",{space}".join(render(x, ascii_only, space) for x in tree[1]) + "]"
    if isinstance(tree, tuple) and tree[0] == "object":
        return render_pairs(tree[1], ascii_only, space)
    return json.dumps(tree, ensure_ascii=ascii_only)


def render_pairs(pairs: list[tuple[str, Any]], ascii_only: bool, space: str) -> str:
    items = (
        f"{json.dumps(k, ensure_ascii=ascii_only)}{space}:{space}{render(v, ascii_only, space)}"
        for k, v in pairs
    )
    return "{" + f",{space}".join(items) + "}"


def repeats(pairs: list[tuple[str, Any]]) -> bool:
    keys = [k for k, _ in pairs]
    return len(set(keys)) < len(keys) or any(subtree_repeats(v) for _, v in pairs)


def subtree_repeats(tree: Any) -> bool:
    if isinstance(tree, tuple) and tree[0] == "array":
        return any(subtree_repeats(x) for x in tree[1])
    if isinstance(tree, tuple) and tree[0] == "object":
        return repeats(tree[1])
    return False


@given(pairs=top, ascii_only=st.booleans(), space=st.sampled_from(["", " ", "\n\t "]))
def test_the_decoder_agrees_with_the_exact_stdlib_decoder(
    pairs: list[tuple[str, Any]], ascii_only: bool, space: str
) -> None:
    raw = render_pairs(pairs, ascii_only, space).encode()
    if repeats(pairs):
        with pytest.raises(InvalidJSON, match="Duplicate key"):
            decode_object(raw)
    else:
        assert decode_object(raw) == json.loads(raw, parse_float=Decimal)


@pytest.mark.parametrize(
    ("raw", "words", "param"),
    [
        (b'{"model": "a\\ud800"}', "surrogate", "model"),
        (b'{"m": [{"content": "\\udfff x"}]}', "surrogate", "m[0].content"),
        (b'{"model": "a\\u0000"}', "NUL", "model"),
        (b'{"a\\u0000": 1}', "NUL", None),
        (b'{"a": ' + b"[" * (MAX_DEPTH) + b"]" * MAX_DEPTH + b"}", "deeper", None),
        (b"[" * 100_000 + b"]" * 100_000, "deeper", None),
        (b'{"a": ' + b"7" * 4301 + b"}", "more than 4300 digits", None),
        (b'{"a": 1e309}', "64-bit float", None),
        (b'{"a": 1, "a": 1}', "Duplicate key 'a'", "a"),
        (b'{"a": "\\u003a", "a": 1}', "Duplicate key 'a'", "a"),
        (b"\xef\xbb\xbf{}", "not valid JSON", None),
        (b'{"a": NaN}', "not valid JSON", None),
        (b'{"a": "\xff"}', "UTF-8", None),
    ],
)
def test_refusals_name_the_problem(raw: bytes, words: str, param: str | None) -> None:
    with pytest.raises(InvalidJSON) as caught:
        decode_object(raw)
    assert words in caught.value.message
    assert caught.value.param == param


def test_what_is_allowed_and_how_it_is_written_back() -> None:
    deep = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert decode_object(deep)["a"]
    value = decode_object(b'{"t": 0.7, "n": 1e2, "big": ' + b"9" * 4300 + b', "s": "\\ud83d\\ude00"}')
    assert value["t"] == Decimal("0.7") and value["n"] == Decimal("1E+2")
    assert value["s"] == "\U0001f600"
    assert to_json({"t": value["t"], "n": value["n"], "s": "é"}) == '{"t":0.7,"n":1E+2,"s":"é"}'
    assert decode_object(b'{"text": "a\\\\u0000b"}') == {"text": "a\\u0000b"}  # not a NUL
