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
