"""Resuming a stored stream: where a client resumes from, and whether a buffer still serves.

Owns: the two rules behind `GET /v1/responses/{id}?stream=true` (adapters/stream_log.py
does the I/O):

- The cursor: the events to send are those with a sequence number greater than it.
  `starting_after=N` (the query, as OpenAI's background responses take it) wins over a
  `Last-Event-ID: N` header (what a browser's EventSource sends back); with neither the
  stream is sent from its first event (cursor -1). N is a decimal integer >= 0; anything
  else is a 400 naming where it came from.
- A stored stream's state at `now` (Unix seconds): `expired` once `now >= expires_at`
  (a stream that ended is kept `retention` seconds after its end: `expiry_after_end`);
  else `ended` when its terminal event is stored; else `live`, unless its writer has
  been silent for `lost_after` seconds (`lost`: the process that ran it is gone, its
  answer will never end). A running stream's writer rewrites its head at least every
  `heartbeat` seconds, so `lost_after` must be longer than that.
"""

from __future__ import annotations

from typing import Literal

from core.errors import InvalidRequest

Availability = Literal["live", "ended", "expired", "lost"]
FROM_START = -1


def _number(value: str, where: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidRequest(
            f"'{where}' must be a sequence number (an integer >= 0), not {value[:40]!r}",
            param=where,
        )
    return int(text)


def cursor(starting_after: str | None, last_event_id: str | None) -> int:
    """The sequence number after which to resume (FROM_START when none is given)."""
    if starting_after is not None:
        return _number(starting_after, "starting_after")
    if last_event_id is not None and last_event_id.strip():
        return _number(last_event_id, "Last-Event-ID")
    return FROM_START


def expiry_after_end(ended_at: float, retention: float) -> float:
    return ended_at + retention


def availability(
    *, ended: bool, updated_at: float, expires_at: float, now: float, lost_after: float
) -> Availability:
    if now >= expires_at:
        return "expired"
    if ended:
        return "ended"
    if now - updated_at >= lost_after:
        return "lost"
    return "live"
