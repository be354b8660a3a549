"""Response bodies decoded by us (adapters/providers/chunked.py): any split of the same
bytes decodes to the same body, malformed framing is refused as h11 refuses it, and the
end of the body (and bytes after it) is seen."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.chunked import BodyError, Chunked, Sized, UntilClose, reader_for


def encode_chunked(pieces: list[bytes], *, ext: bool = False, trailers: bool = False) -> bytes:
    out = b"".join(
        b"%x%s\r\n%s\r\n" % (len(p), b";name=v" if ext else b"", p) for p in pieces if p
    )
    return out + b"0\r\n" + (b"x-trailer: 1\r\n" if trailers else b"") + b"\r\n"


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def decode(reader: Chunked | Sized | UntilClose, parts: list[bytes]) -> bytes:
    return b"".join(reader.feed(p) for p in parts)


@given(
    pieces=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    ext=st.booleans(),
    trailers=st.booleans(),
)
def test_any_split_of_a_chunked_body_decodes_to_the_same_bytes(
    pieces: list[bytes], cuts: list[int], ext: bool, trailers: bool
) -> None:
    wire = encode_chunked(pieces, ext=ext, trailers=trailers)
    reader = Chunked()
    assert decode(reader, splits(wire, cuts)) == b"".join(pieces)
    assert reader.done and not reader.extra
    reader.end()  # complete: EOF is fine now


@given(pieces=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6),
       cut=st.integers(min_value=0, max_value=2000))
def test_a_chunked_body_cut_anywhere_is_incomplete(pieces: list[bytes], cut: int) -> None:
    wire = encode_chunked(pieces)
    cut %= len(wire)  # strictly before the last byte
    reader = Chunked()
    got = reader.feed(wire[:cut])
    assert b"".join(pieces).startswith(got)
    assert not reader.done
    with pytest.raises(BodyError):
        reader.end()


@given(pieces=st.lists(st.binary(max_size=100), max_size=5))
def test_the_decoder_agrees_with_h11(pieces: list[bytes]) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    wire = encode_chunked(pieces, ext=True, trailers=True)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + wire)
    theirs = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            theirs += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    assert decode(Chunked(), [wire]) == theirs


@given(pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8), ext=st.booleans())
def test_a_read_per_chunk_gives_that_chunks_bytes(pieces: list[bytes], ext: bool) -> None:
    # a stream's usual read (one whole chunk: the decoder's shortcut), then the end
    reader = Chunked()
    for piece in pieces:
        assert reader.feed(encode_chunked([piece], ext=ext)[:-5]) == piece
        assert not reader.done
    assert reader.feed(b"0\r\n\r\n") == b"" and reader.done and not reader.extra


def test_one_read_with_several_chunks_gives_them_joined() -> None:
    reader = Chunked()
    assert reader.feed(b"3\r\nabc\r\n2\r\nde\r\n") == b"abcde"
    assert reader.feed(b"0\r\n\r\n") == b"" and reader.done


def test_bytes_after_the_end_are_seen() -> None:
    reader = Chunked()
    reader.feed(b"1\r\na\r\n0\r\n\r\nHTTP/1.1")
    assert reader.done and reader.extra
    sized = Sized(3)
    assert sized.feed(b"abcdef") == b"abc" and sized.done and sized.extra


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        (b"zz\r\nab\r\n", "illegal chunk header"),
        (b"\r\n", "illegal chunk header"),
        (b"123456789012345678901\r\n", "illegal chunk header"),  # 21 hex digits
        (b"2\r\nabX\r\n", "malformed chunk footer"),
        (b"2\r\nabXY", "malformed chunk footer"),  # a whole chunk's length, but no CRLF after it
        (b"2\r\nab\n", "malformed chunk footer"),
        (b"3 ;x\r\n", "illegal chunk header"),  # space before the extension: h11 refuses it too
    ],
)
def test_malformed_chunked_framing_is_refused(wire: bytes, says: str) -> None:
    with pytest.raises(BodyError, match=says):
        Chunked().feed(wire)


def test_a_size_line_without_end_is_not_buffered_without_bound() -> None:
    reader = Chunked()
    reader.feed(b"1" * 100)  # fine so far: more may come
    with pytest.raises(BodyError, match="too long"):
        reader.feed(b";" + b"x" * 20000)


def test_spaces_after_the_size_and_a_split_crlf_are_accepted() -> None:
    reader = Chunked()
    assert reader.feed(b"2 \t\r\nab\r") == b"ab"
    assert reader.feed(b"\n0\r\n\r\n") == b"" and reader.done


def test_sized_and_until_close_bodies() -> None:
    sized = Sized(5)
    assert sized.feed(b"ab") == b"ab" and not sized.done
    with pytest.raises(BodyError, match="3 bytes"):
        sized.end()
    assert sized.feed(b"cde") == b"cde" and sized.done
    assert Sized(0).done
    until = UntilClose()
    assert until.feed(b"x") == b"x" and not until.done
    until.end()
    assert until.done


def test_the_reader_follows_the_head() -> None:
    assert isinstance(reader_for(200, [(b"transfer-encoding", b"chunked"), (b"content-length", b"3")]), Chunked)
    assert isinstance(reader_for(200, [(b"content-length", b"3")]), Sized)
    assert reader_for(204, [(b"content-length", b"3")]).done
    assert reader_for(304, []).done
    assert isinstance(reader_for(200, []), UntilClose)
