"""`Cancel-After` durations: examples per rule, and properties (format/parse round trip;
a concatenation of terms in unit order is the sum of its terms)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.durations import MAX_SECONDS, DeadlineError, deadline, format, parse


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("2m30s", 150.0),
     ("1500ms", 1.5), ("90", 90.0), (" 10s ", 10.0), ("1h0m1s", 3601.0), ("0.5s", 0.5)],
)  # fmt: skip
def test_examples(text: str, seconds: float) -> None:
    assert parse(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "not like"), ("s", "not like"), ("-5s", "not like"), ("5 s", "not like"),
     ("1e3s", "not like"), ("30x", "not like"), ("30m1h", "order"), ("1s1s", "order"),
     ("0s", "more than 0"), ("0", "more than 0"), ("721h", "30 days"), ("1h30", "not like"),
     (".5s", "not like"), ("5.s", "not like")],
)  # fmt: skip
def test_bad_durations_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse(text)


def test_format_writes_the_canonical_form() -> None:
    assert [format(s) for s in (5400.0, 45.0, 0.25, 3601.0, 60.0)] == ["1h30m", "45s", "0.25s", "1h1s", "1m"]


@given(st.integers(1, MAX_SECONDS * 1000))
def test_format_then_parse_is_the_same_value(millis: int) -> None:
    seconds = millis / 1000
    assert parse(format(seconds)) == pytest.approx(seconds, abs=1e-9)


@given(h=st.integers(0, 100), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_a_duration_is_the_sum_of_its_terms(h: int, m: int, s: int, ms: int) -> None:
    terms = [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")]
    text = "".join(f"{n}{unit}" for n, unit in terms if n)
    total = h * 3600 + m * 60 + s + ms / 1000
    if not text:
        return
    assert parse(text) == pytest.approx(total, abs=1e-9)


def test_a_jobs_deadline_is_the_earlier_of_header_and_field() -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert deadline(now, None, None) is None
    assert deadline(now, "5m", None) == now + 300
    assert deadline(now, None, "1h") == now + 3600
    assert deadline(now, "5m", "1h") == now + 300
    assert deadline(now, "1h", "2027-01-15T08:10:00Z") == now + 600
    with pytest.raises(DeadlineError):  # 09:00+01:00 is 08:00Z: now, not the future
        deadline(now, None, "2027-01-15T09:00:00+01:00")


@pytest.mark.parametrize(
    ("header", "field", "param"),
    [("soon", None, "Cancel-After"), ("0s", None, "Cancel-After"), (None, 30, "deadline"),
     (None, "2027-01-15T07:00:00Z", "deadline"), (None, "2027-01-15T09:00:00", "deadline"),
     (None, "2027-03-15T09:00:00Z", "deadline"), (None, "tomorrow", "deadline")],
)  # fmt: skip
def test_a_bad_deadline_names_where_it_came_from(header: str | None, field: object, param: str) -> None:
    with pytest.raises(DeadlineError) as caught:
        deadline(1_800_000_000.0, header, field)
    assert caught.value.param == param and caught.value.message
