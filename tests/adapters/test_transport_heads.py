"""H11Transport's request heads: made once per URL, accept and headers, then only the
content-length differs; every head is what `head.encode_request` writes for its fields."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.head import encode_request
from adapters.providers.transport import JSON, USER_AGENT, H11Transport

URL = "http://127.0.0.1:9/v1/chat/completions"


def _fields(transport: H11Transport, headers: dict[str, str], length: bytes) -> list[tuple[bytes, bytes]]:
    target = transport._target(URL)
    return [(b"host", target.authority), (b"user-agent", USER_AGENT), (b"content-type", JSON),
            (b"accept", JSON), *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            (b"content-length", length)]


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=5),
       st.sampled_from([{}, {"authorization": "Bearer sk-x"}, {"x-odd": " padded "}, {"bad\n": "v"}]))
def test_every_head_is_encode_requests(sizes: list[int], headers: dict[str, str]) -> None:
    transport = H11Transport()
    target = transport._target(URL)
    for size in sizes:
        length = b"%d" % size
        fields = _fields(transport, headers, length)
        assert transport._head(URL, JSON, headers, target, fields, length) == encode_request(target.path, fields)


_TRACE_VALUES = st.one_of(
    st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", fullmatch=True),
    st.sampled_from(["", " lead", "trail ", "a\r\nx-injected: 1", "nul\x00", "k=v,k2=v2"]),
)


@given(st.lists(st.tuples(st.integers(0, 10**6), _TRACE_VALUES, st.none() | _TRACE_VALUES), min_size=1, max_size=6),
       st.sampled_from([{}, {"authorization": "Bearer sk-x"}, {"bad\n": "v"}]))
def test_trace_context_is_not_in_the_key(calls: list[tuple[int, str, str | None]], headers: dict[str, str]) -> None:
    """A call's `traceparent` / `tracestate` (new on every call) still gives exactly
    `encode_request`'s head, valid or not, and the cache keeps one head for them all."""
    transport = H11Transport()
    target = transport._target(URL)
    for size, parent, state in calls:
        length = b"%d" % size
        per_call = {"traceparent": parent, **({"tracestate": state} if state is not None else {})}
        both = {**headers, **per_call}
        fields = _fields(transport, both, length)
        assert transport._head(URL, JSON, both, target, fields, length) == encode_request(target.path, fields)
    assert len(transport._heads) <= 1


def test_trace_context_inside_the_headers_is_in_the_key() -> None:
    """Only trace context at the end is left out: one before another header keys the head."""
    transport = H11Transport()
    target = transport._target(URL)
    for parent in ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", "00-" + "3" * 32 + "-" + "4" * 16 + "-01"):
        headers = {"traceparent": parent, "authorization": "Bearer sk-x"}
        fields = _fields(transport, headers, b"7")
        assert transport._head(URL, JSON, headers, target, fields, b"7") == encode_request(target.path, fields)
    assert len(transport._heads) == 2
