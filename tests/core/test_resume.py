"""core.resume: the resume cursor and a stored stream's availability (tables + Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import resume
from core.errors import InvalidRequest

numbers = st.integers(min_value=0, max_value=10**18 - 1)
times = st.floats(min_value=0, max_value=1e10, allow_nan=False)


@given(numbers, st.one_of(st.none(), st.text(max_size=5)))
def test_starting_after_wins_over_last_event_id(n: int, header: str | None) -> None:
    assert resume.cursor(str(n), header) == n


@given(numbers)
def test_last_event_id_alone_is_the_cursor(n: int) -> None:
    assert resume.cursor(None, f" {n} ") == n


def test_no_cursor_is_from_the_start() -> None:
    assert resume.cursor(None, None) == resume.FROM_START
    assert resume.cursor(None, "  ") == resume.FROM_START  # an empty Last-Event-ID


@pytest.mark.parametrize(
    ("query", "header", "param"),
    [("-1", None, "starting_after"), ("1.5", None, "starting_after"), ("x", "3", "starting_after"),
     ("", None, "starting_after"), ("²", None, "starting_after"), ("1" * 19, None, "starting_after"),
     (None, "-2", "Last-Event-ID"), (None, "abc", "Last-Event-ID"), (None, "0x10", "Last-Event-ID")],
)  # fmt: skip
def test_a_malformed_cursor_is_a_400_naming_where_it_came_from(
    query: str | None, header: str | None, param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        resume.cursor(query, header)
    assert raised.value.param == param and raised.value.status == 400


@given(st.booleans(), times, times, times, st.floats(min_value=0.001, max_value=1e6))
def test_availability_rules(ended: bool, updated: float, expires: float, now: float, lost: float) -> None:
    state = resume.availability(
        ended=ended, updated_at=updated, expires_at=expires, now=now, lost_after=lost
    )
    if now >= expires:
        assert state == "expired"  # expiry beats everything
    elif ended:
        assert state == "ended"  # an ended stream is never lost
    else:
        assert state == ("lost" if now - updated >= lost else "live")


@given(times, st.floats(min_value=1, max_value=1e7))
def test_an_ended_stream_is_kept_retention_seconds(ended_at: float, retention: float) -> None:
    expires = resume.expiry_after_end(ended_at, retention)
    kw = {"ended": True, "updated_at": ended_at, "expires_at": expires, "lost_after": 1.0}
    assert resume.availability(now=expires, **kw) == "expired"  # type: ignore[arg-type]
    assert resume.availability(now=ended_at, **kw) == "ended"  # type: ignore[arg-type]
