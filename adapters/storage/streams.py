"""Stored response events: the rows behind `adapters/stream_log.py`, for both backends.

Owns: what a stored stream is (`StreamHead`: whose it is, whether it ended, its last
sequence number and when it expires; `StoredEvent`: one event as it was sent, its SSE
event name and its data text byte for byte) and the SQL both backends run, written once
with the driver's placeholder (`?` for SQLite, `%s` for Postgres).

Rules:
- A write is idempotent: a head is upserted, an event already stored (same stream and
  sequence number) is left as it is, so a batch tried again after an error is harmless.
- Reads are tenant-scoped: another tenant's stream id reads as absent.
- Pruning removes every stream whose `expires_at` has passed, events first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import frozen


@frozen
class StoredEvent:
    seq: int
    event: str | None  # the SSE `event:` name (None: a data-only event)
    data: str  # the `data:` text as it was sent


@frozen
class StreamHead:
    id: str
    tenant: str
    ended: bool
    last_seq: int  # -1 before the first event
    updated_at: float  # Unix seconds of the last write
    expires_at: float  # Unix seconds


@frozen
class StreamWrite:
    """One stream's part of a batch: its head as it now is and the events not yet stored."""

    head: StreamHead
    events: tuple[StoredEvent, ...]


def upsert_head_sql(mark: str) -> str:
    return (
        "INSERT INTO stream_heads (id, tenant, ended, last_seq, updated_at, expires_at)"
        f" VALUES ({', '.join([mark] * 6)}) ON CONFLICT (id) DO UPDATE"
        " SET ended = excluded.ended, last_seq = excluded.last_seq,"
        " updated_at = excluded.updated_at, expires_at = excluded.expires_at"
    )


def insert_event_sql(mark: str) -> str:
    return (
        f"INSERT INTO stream_events (stream_id, seq, event, data)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT DO NOTHING"
    )


def head_sql(mark: str) -> str:
    return (
        "SELECT id, tenant, ended, last_seq, updated_at, expires_at FROM stream_heads"
        f" WHERE id = {mark} AND tenant = {mark}"
    )


def events_sql(mark: str) -> str:
    return (
        f"SELECT seq, event, data FROM stream_events WHERE stream_id = {mark} AND seq > {mark}"
        " ORDER BY seq"
    )


def prune_sql(mark: str) -> tuple[str, str]:
    return (
        "DELETE FROM stream_events WHERE stream_id IN"
        f" (SELECT id FROM stream_heads WHERE expires_at <= {mark})",
        f"DELETE FROM stream_heads WHERE expires_at <= {mark}",
    )


def head_rows(writes: Sequence[StreamWrite]) -> list[tuple[Any, ...]]:
    return [
        (h.id, h.tenant, h.ended, h.last_seq, h.updated_at, h.expires_at)
        for h in (w.head for w in writes)
    ]


def event_rows(writes: Sequence[StreamWrite]) -> list[tuple[Any, ...]]:
    return [(w.head.id, e.seq, e.event, e.data) for w in writes for e in w.events]


def head_of(row: Sequence[Any]) -> StreamHead:
    return StreamHead(
        str(row[0]), str(row[1]), bool(row[2]), int(row[3]), float(row[4]), float(row[5])
    )


def event_of(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(int(row[0]), None if row[1] is None else str(row[1]), str(row[2]))


# -- the three operations, on a DB-API connection (sqlite3 or psycopg) in a transaction --


def write(c: Any, mark: str, writes: Sequence[StreamWrite]) -> None:
    """Upsert each head and add its new events."""
    cur = c.cursor()
    cur.executemany(upsert_head_sql(mark), head_rows(writes))
    events = event_rows(writes)
    if events:
        cur.executemany(insert_event_sql(mark), events)


def read(
    c: Any, mark: str, tenant: str, stream_id: str, after: int
) -> tuple[StreamHead | None, list[StoredEvent]]:
    """The tenant's head (None: absent or another tenant's) and its events after `after`."""
    row = c.execute(head_sql(mark), (stream_id, tenant)).fetchone()
    if row is None:
        return None, []
    found = c.execute(events_sql(mark), (stream_id, after)).fetchall()
    return head_of(row), [event_of(r) for r in found]


def prune(c: Any, mark: str, now: float) -> int:
    """Delete every expired stream, events first; how many heads went."""
    events, heads = prune_sql(mark)
    c.execute(events, (now,))
    return int(c.execute(heads, (now,)).rowcount)
