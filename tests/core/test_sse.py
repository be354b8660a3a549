"""SSE: the WHATWG examples, line-ending and chunking edge cases, and Hypothesis properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.sse import DataTemplate, SSEDecoder, SSEEvent, data_template, encode_comment, encode_event


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    assert decoder.close() == []
    return events


def msg(data: str, **kw: object) -> SSEEvent:
    return SSEEvent(data=data, **kw)  # type: ignore[arg-type]


# ---- the spec's examples ---------------------------------------------------------------


def test_spec_multi_line_data() -> None:
    assert decode(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [msg("YHOO\n+2\n10")]


def test_spec_ids_comments_and_leading_space() -> None:
    stream = (b": test stream\n\ndata: first event\nid: 1\n\n"
              b"data:second event\nid\n\ndata:  third event\n\n")
    assert decode(stream) == [
        msg("first event", id="1"),
        msg("second event", id=""),
        msg(" third event", id=""),
    ]


def test_spec_empty_data_lines_and_unterminated_tail() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data\n\ndata\ndata\n\ndata:")
    assert events == [msg(""), msg("\n")]
    assert decoder.has_pending()
    assert decoder.close() == []


def test_spec_space_after_colon_is_optional() -> None:
    assert decode(b"data:test\n\ndata: test\n\n") == [msg("test"), msg("test")]


# ---- fields ----------------------------------------------------------------------------


def test_event_type_applies_to_one_event_only() -> None:
    assert decode(b"event: add\ndata: 1\n\ndata: 2\n\n") == [
        msg("1", event="add"), msg("2")]


def test_event_without_data_fires_nothing_and_resets_type() -> None:
    assert decode(b"event: x\n\ndata: y\n\n") == [msg("y")]


def test_id_persists_and_ignores_nul() -> None:
    assert decode(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\x00\ndata: c\n\n") == [
        msg("a", id="7"), msg("b", id="7"), msg("c", id="7")]


def test_id_alone_updates_without_dispatch() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 3\n\n") == []
    assert decoder.last_event_id == "3"
    assert decoder.feed(b"data: z\n\n") == [msg("z", id="3")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"retry: 1500", 1500), (b"retry:0", 0), (b"retry: 15x", None), (b"retry: -1", None),
     (b"retry: 1.5", None), (b"retry:", None), ("retry: ١٢".encode(), None),
     (b"retry:  10", None)],
)
def test_retry_takes_ascii_digits_only(line: bytes, expected: int | None) -> None:
    assert decode(line + b"\ndata: x\n\n") == [msg("x", retry=expected)]


def test_retry_persists() -> None:
    assert decode(b"retry: 10\ndata: a\n\ndata: b\n\n") == [
        msg("a", retry=10), msg("b", retry=10)]


def test_field_without_colon_and_unknown_fields() -> None:
    assert decode(b"data\nfoo: bar\nDATA: no\ndata:x\n\n") == [msg("\nx")]


def test_only_one_space_is_stripped_and_colons_in_value_kept() -> None:
    assert decode(b"data:   a: b:c\n\n") == [msg("  a: b:c")]


def test_comments_are_counted_and_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keepalive\n\n:\ndata: x\n:mid\n\n") == [msg("x")]
    assert decoder.comments == 3


# ---- line endings, encoding, chunking --------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(eol: bytes) -> None:
    stream = b"data: a" + eol + b"data: b" + eol + eol
    assert decode(stream) == [msg("a\nb")]


def test_cr_then_lf_in_next_chunk_is_one_line_ending() -> None:
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [msg("a\nb")]


def test_cr_then_cr_is_two_line_endings() -> None:
    assert decode(b"data: a\r", b"\r") == [msg("a")]


def test_cr_then_empty_chunks_then_lf() -> None:
    assert decode(b"data: a\r", b"", b"\n", b"data: b\n\n") == [msg("a\nb")]


def test_utf8_split_across_chunks() -> None:
    raw = "data: héllo 🎉\n\n".encode()
    assert decode(*[raw[i:i + 1] for i in range(len(raw))]) == [msg("héllo 🎉")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert decode(b"data: a\xffb\n\n") == [msg("a\ufffdb")]


def test_bom_at_start_is_dropped_even_when_split() -> None:
    bom = "\ufeff".encode()
    assert decode(bom + b"data: x\n\n") == [msg("x")]
    assert decode(bom[:1], bom[1:2], bom[2:] + b"data", b": x\n\n") == [msg("x")]


def test_only_one_bom_is_dropped() -> None:
    bom = "\ufeff".encode()
    # the second BOM makes the field name "\ufeffdata": unknown, ignored
    assert decode(bom + bom + b"data: x\n\ndata: y\n\n") == [msg("y")]
    assert decode(b"data: x\n\n" + bom + b"data: y\n\n") == [msg("x")]


def test_has_pending_tracks_incomplete_tails() -> None:
    decoder = SSEDecoder()
    assert not decoder.has_pending()
    decoder.feed(b"data: x")
    assert decoder.has_pending()  # a partial line
    decoder.feed(b"\n")
    assert decoder.has_pending()  # data without its blank line
    assert decoder.feed(b"\n") == [msg("x")]
    assert not decoder.has_pending()
    decoder.feed("é".encode()[:1])
    assert decoder.has_pending()  # half a UTF-8 character
    assert decoder.close() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"\n")


def test_comment_only_tail_is_not_pending_after_its_line_ends() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": ping\n")
    assert not decoder.has_pending()


# ---- encoder ---------------------------------------------------------------------------


def test_encode_event_layout() -> None:
    assert encode_event("a\nb", event="delta", id="4", retry=100) == (
        b"event: delta\nid: 4\nretry: 100\ndata: a\ndata: b\n\n")
    assert encode_event("") == b"data: \n\n"


@pytest.mark.parametrize(
    "kw", [{"event": "a\nb"}, {"event": "a\r"}, {"id": "1\n"}, {"id": "\r2"}, {"id": "x\x00"},
           {"retry": -1}, {"retry": True}])
def test_encode_event_rejects_bad_fields(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **kw)  # type: ignore[arg-type]


def test_encode_comment() -> None:
    assert encode_comment() == b":\n\n"
    assert encode_comment("keepalive") == b": keepalive\n\n"
    assert encode_comment("a\r\nb") == b": a\n: b\n\n"
    decoder = SSEDecoder()
    assert decoder.feed(encode_comment("x\ny")) == []
    assert decoder.comments == 2


# ---- properties ------------------------------------------------------------------------

EOLS = st.sampled_from(["\n", "\r", "\r\n"])
_line = st.one_of(
    st.builds(lambda v: f"data:{v}", st.text(max_size=12)),
    st.builds(lambda v: f"data: {v}", st.text(max_size=12)),
    st.builds(lambda v: f"event: {v}", st.text(max_size=6)),
    st.builds(lambda v: f"id: {v}", st.text(max_size=6)),
    st.builds(lambda v: f"retry: {v}", st.sampled_from(["10", "x", "", "0042"])),
    st.builds(lambda v: f":{v}", st.text(max_size=6)),
    st.sampled_from(["", "", "data", "id", "event", "\ufeff", "unknown: z"]),
).map(lambda s: re.sub(r"[\r\n]", "", s))
streams = st.builds(
    lambda bom, pieces: ("\ufeff" if bom else "") + "".join(a + b for a, b in pieces),
    st.booleans(), st.lists(st.tuples(_line, EOLS), max_size=25),
).map(lambda s: s.encode("utf-8", "surrogatepass"))


def _run(chunks: list[bytes]) -> tuple[list[SSEEvent], bool, int, str | None]:
    decoder = SSEDecoder()
    events = [e for c in chunks for e in decoder.feed(c)]
    return events, decoder.has_pending(), decoder.comments, decoder.last_event_id


def _split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    bounds = [0, *points, len(raw)]
    return [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(raw=streams, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_decoding_is_invariant_under_rechunking(raw: bytes, cuts: list[int]) -> None:
    whole = _run([raw])
    assert _run([raw[i:i + 1] for i in range(len(raw))]) == whole
    assert _run(_split(raw, cuts)) == whole


@given(raw=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_are_invariant_under_rechunking(raw: bytes, cuts: list[int]) -> None:
    whole = _run([raw])
    assert _run([raw[i:i + 1] for i in range(len(raw))]) == whole
    assert _run(_split(raw, cuts)) == whole


def _normalized(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


_single_line = st.text().map(lambda s: re.sub(r"[\r\n]", "", s))


@given(
    data=st.text(),
    event=st.none() | _single_line,
    id_=st.none() | _single_line.map(lambda s: s.replace("\x00", "")),
    retry=st.none() | st.integers(min_value=0, max_value=10**12),
    prefix=st.booleans(),
)
def test_encode_decode_round_trip(
    data: str, event: str | None, id_: str | None, retry: int | None, prefix: bool
) -> None:
    raw = encode_event(data, event=event, id=id_, retry=retry)
    chunks = [b": hi\n\n", raw] if prefix else [raw]
    assert decode(*chunks) == [
        SSEEvent(event=event or "message", data=_normalized(data), id=id_, retry=retry)]


@given(st.lists(st.tuples(st.text(), st.none() | _single_line), max_size=10))
def test_a_sequence_of_events_round_trips_byte_by_byte(
    items: list[tuple[str, str | None]]
) -> None:
    raw = b"".join(encode_event(d, event=e) for d, e in items)
    events = decode(*[raw[i:i + 1] for i in range(len(raw))])
    assert events == [SSEEvent(event=e or "message", data=_normalized(d)) for d, e in items]


@given(st.text())
def test_comments_never_dispatch(text: str) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(encode_comment(text)) == []
    assert not decoder.has_pending()


# ---- the precompiled one-slot template ------------------------------------------------------

_ONE_LINE = st.text().filter(lambda t: "\n" not in t and "\r" not in t)


@given(before=_ONE_LINE, after=_ONE_LINE, value=_ONE_LINE, slot=st.text(min_size=1))
def test_a_template_renders_what_the_general_encoder_writes(
    before: str, after: str, value: str, slot: str
) -> None:
    data = before + slot + after
    template = data_template(data, slot)
    if data.count(slot) != 1 or "\n" in slot or "\r" in slot:
        assert template is None
        return
    assert template is not None
    assert template.render(value.encode()) == encode_event(before + value + after)
    assert SSEDecoder().feed(template.render(value.encode())) == [SSEEvent(data=before + value + after)]


def test_a_template_needs_exactly_one_slot_on_one_line() -> None:
    assert data_template('{"a":"$"}', "$") == DataTemplate(b'data: {"a":"', b'"}\n\n')
    assert data_template("$$", "$") is None
    assert data_template("no slot", "$") is None
    assert data_template("$\nline two", "$") is None
    assert data_template("anything", "") is None


def test_a_whole_data_event_in_one_piece_keeps_the_state_before_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\nretry: 5\nevent: delta\n") == []
    assert decoder.feed(b"data: x\n\n") == [SSEEvent(event="delta", data="x", id="7", retry=5)]
    assert decoder.feed(b"data: y\n\n") == [SSEEvent(data="y", id="7", retry=5)]  # type reset
    assert decoder.feed(b"data: a") == [] and decoder.feed(b"data: b\n\n") == [SSEEvent(data="adata: b", id="7", retry=5)]
    assert decoder.feed(b"data: 1\n") == [] and decoder.feed(b"data: 2\n\n") == [SSEEvent(data="1\n2", id="7", retry=5)]
    assert decoder.feed(b"\r") == [] and decoder.feed(b"\ndata: z\n\n") == [SSEEvent(data="z", id="7", retry=5)]


_data_events = st.lists(
    st.one_of(
        st.builds(lambda v: f"data: {v}\n\n", st.text(max_size=12).map(lambda s: re.sub(r"[\r\n]", "", s))),
        st.sampled_from(["event: x\n", "id: 7\n", "retry: 5\n", ": c\n", "data:\n\n", "\n"]),
    ),
    max_size=12,
)


@given(pieces=st.lists(_data_events, max_size=6))
def test_reads_of_whole_data_events_decode_as_byte_by_byte(pieces: list[list[str]]) -> None:
    # a read holding several whole `data:` events takes the shortcut; the state it leaves
    # (event type, id, retry) is what the line-by-line walk leaves
    raw = ["".join(p).encode() for p in pieces]
    joined = b"".join(raw)
    assert _run(raw) == _run([joined[i:i + 1] for i in range(len(joined))])
