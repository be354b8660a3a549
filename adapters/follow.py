"""Following stored events as they come: the one loop behind every resumable stream.

Owns: turning "read what is stored after a sequence number" and "wait until more may be
there" into batches of events, with keep-alives, until the stream's end. Used by a
response's stored stream (adapters/stream_log.py, `StreamLog.tail`) and a job's events
(adapters/job_stream.py, `JobEvents.follow`); each says how to read and how to wait.

Rules:
- It starts from `first`, what the caller's read after `after` gave (so a read that
  refuses, e.g. NotFound, is raised before the caller sends anything), and yields each
  non-empty batch; the cursor moves to a batch's last sequence number.
- An empty batch means nothing came for `keepalive` seconds (the caller sends a
  keep-alive), never more often than that.
- It ends once the head says the stream ended and nothing is left after the cursor.
- `wait(after, until)` returns when there may be events after `after`, at the latest at
  `until` (`clock.now()` time; infinite when there are no keep-alives). Whatever `read`
  or `wait` raise ends the loop by raising.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from adapters.clock import Clock
from adapters.storage.streams import StoredEvent, StreamHead

Snapshot = tuple[StreamHead, list[StoredEvent]]


async def follow_events(
    first: Snapshot,
    after: int,
    *,
    read: Callable[[int], Awaitable[Snapshot]],
    wait: Callable[[int, float], Awaitable[None]],
    clock: Clock,
    keepalive: float,
) -> AsyncIterator[list[StoredEvent]]:
    """From `first` (what `read(after)` gave), the events in batches as they come, until
    the end; `[]` after each `keepalive` quiet seconds (see the module's rules)."""
    head, events = first
    quiet_since = clock.now()
    while True:
        if events:
            after = events[-1].seq
            quiet_since = clock.now()
            yield events
        elif clock.now() - quiet_since >= keepalive:
            quiet_since = clock.now()
            yield []
        if head.ended and after >= head.last_seq:
            return
        await wait(after, quiet_since + keepalive)
        head, events = await read(after)


__all__ = ["Snapshot", "follow_events"]
