"""adapters/providers/head.py against h11: what the direct encoder and parser accept, they
give exactly as h11 does; what they refuse (None), h11 decides; the usual heads are theirs."""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers.head import encode_request, parse_response

# ---- what h11 makes of the same bytes ---------------------------------------------------


def h11_request(target: bytes, fields: list[tuple[bytes, bytes]]) -> bytes | None:
    try:
        return h11.Connection(h11.CLIENT).send(h11.Request(method=b"POST", target=target, headers=fields))
    except h11.LocalProtocolError:
        return None


def h11_response(raw: bytes) -> object:
    """(status, headers, reusable) as the pooled client read it with h11, or what else h11 says."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"POST", target=b"/x", headers=[(b"host", b"h"), (b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return ("refused", str(exc))
    if isinstance(event, h11.Response):
        return (event.status_code, list(event.headers), conn.our_state is h11.DONE)
    return type(event).__name__


# ---- heads, plain and not -----------------------------------------------------------------

TOKEN = st.text("abcxyzABC-_.!0123456789", min_size=1, max_size=8).map(str.encode)
ODD = st.sampled_from([b"", b" ", b"\t", b"\x00", b"\x7f", b"\xe9", b"\n", b"\r", b":", b"(", b",", b"\x0b"])
VALUE = st.lists(st.one_of(TOKEN, ODD), max_size=5).map(b"".join)
NAME = st.one_of(
    TOKEN,
    st.sampled_from([b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
                     b"connection", b"Host", b"host", b"Upgrade", b"Expect", b"bad name", b"", b" x"]),
)
SPECIAL_VALUE = st.sampled_from([b"5", b"0", b"007", b"5, 5", b"5,6", b"x", b"", b"chunked", b"Chunked",
                                 b"gzip, chunked", b"close", b"Keep-Alive, Close", b"closed", b" 5 ",
                                 b"123456789012345678901"])
FIELD = st.tuples(NAME, st.one_of(VALUE, SPECIAL_VALUE))
PLAIN_FIELD = st.tuples(
    TOKEN.filter(lambda n: n.lower() not in (b"host", b"content-length", b"transfer-encoding",
                                             b"connection", b"upgrade", b"expect")),
    st.lists(TOKEN, min_size=0, max_size=3).map(b" ".join),
)


@settings(max_examples=400)
@given(
    target=st.one_of(st.just(b"/v1/chat/completions"), VALUE),
    fields=st.lists(FIELD, max_size=6),
    with_host=st.booleans(),
    with_length=st.booleans(),
)
def test_a_request_head_is_encoded_as_h11_encodes_it_or_left_to_h11(
    target: bytes, fields: list[tuple[bytes, bytes]], with_host: bool, with_length: bool
) -> None:
    fields = ([(b"host", b"api.example")] if with_host else []) + fields
    fields += [(b"content-length", b"12")] if with_length else []
    ours = encode_request(target, fields)
    if ours is not None:
        assert ours == h11_request(target, fields)


@given(fields=st.lists(PLAIN_FIELD, max_size=8), length=st.integers(0, 10**9))
def test_the_transports_own_request_heads_are_encoded_directly(
    fields: list[tuple[bytes, bytes]], length: int
) -> None:
    head = [(b"host", b"127.0.0.1:8080"), (b"content-length", b"%d" % length), *fields]
    ours = encode_request(b"/v1/chat/completions", head)
    assert ours is not None and ours == h11_request(b"/v1/chat/completions", head)


STATUS_LINE = st.one_of(
    st.tuples(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2", b"http/1.1", b"HTTP/1.1 "]),
              st.sampled_from([b"200"] * 4 + [b"204", b"301", b"429", b"503", b"599", b"600", b"101", b"100", b"20", b"2000"]),
              st.sampled_from([b" OK", b"", b" ", b" Too Many\tRequests", b" \xe9t\xe9", b" a\x00b", b" a\rb"]))
    .map(b"".join),
    st.just(b"HTTP/1.1 200 OK"),
    VALUE,
)
LINE_END = st.sampled_from([b"\r\n"] * 12 + [b"\n"])
HEAD_FIELD = st.one_of(PLAIN_FIELD, PLAIN_FIELD, st.tuples(NAME, SPECIAL_VALUE), FIELD)


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    status = draw(STATUS_LINE)
    lines = [name + draw(st.sampled_from([b": "] * 4 + [b":", b":\t", b" :"]))
             + value + draw(st.sampled_from([b""] * 4 + [b" "]))
             for name, value in draw(st.lists(HEAD_FIELD, max_size=6))]
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), b" folded")
    end = draw(LINE_END)
    return b"".join(line + draw(LINE_END) for line in [status, *lines]) + end


@settings(max_examples=600)
@given(raw=response_heads())
def test_a_response_head_parsed_directly_is_what_h11_reads(raw: bytes) -> None:
    ours = parse_response(raw)
    if ours is not None:
        assert ours == h11_response(raw)


@given(
    status=st.integers(200, 599),
    reason=st.sampled_from([b"OK", b"", b"Too Many Requests"]),
    fields=st.lists(PLAIN_FIELD, max_size=8),
    framing=st.sampled_from([[], [(b"Content-Length", b"42")], [(b"transfer-encoding", b"Chunked")]]),
    close=st.booleans(),
)
def test_the_usual_response_heads_are_parsed_directly(
    status: int, reason: bytes, fields: list[tuple[bytes, bytes]],
    framing: list[tuple[bytes, bytes]], close: bool,
) -> None:
    every = [*fields, *framing, *([(b"Connection", b"close")] if close else [])]
    raw = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(b"%s: %s\r\n" % f for f in every) + b"\r\n"
    ours = parse_response(raw)
    assert ours is not None and ours == h11_response(raw)
    assert ours[2] is not close


def test_heads_outside_the_plain_subset_are_left_to_h11() -> None:
    for raw in (
        b"HTTP/1.1 100 Continue\r\n\r\n",  # informational
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",  # not reusable: h11 says so
        b"HTTP/1.1 200 OK\nx: 1\n\n",  # bare line feeds
        b"HTTP/1.1 200 OK\r\nx: 1\r\n  more\r\n\r\n",  # a folded line
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",  # h11 refuses it
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",  # h11 refuses it
    ):
        assert parse_response(raw) is None
    assert encode_request(b"/x", [(b"host", b"h"), (b"content-length", b"1"), (b"connection", b"close")]) is None
    assert encode_request(b"/x", [(b"host", b"h"), (b"content-length", b"1"), (b"x", b"a\r\nb")]) is None
