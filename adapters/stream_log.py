"""Stored response events: a stream's events kept, so it can be resumed or sent again.

Owns: recording the events of a stream as they were sent (`StreamLog.open` gives a
`Recorder`), writing them to the database in batches, and reading them back for any
process: `read` (what is stored after a sequence number) and `tail` (that, then the rest
as it comes, until the stream's end). The wire format is the caller's: an event is its
sequence number, SSE event name and data text, stored byte for byte.

Rules:
- `Recorder.add` never waits: events go to memory and one writer task (a Trio system
  task per `StreamLog`, started on first use) writes every stream's new events in ONE
  transaction at most `flush_seconds` after the first unwritten one (`Storage.
  stream_write`). A running stream's head is rewritten at least every
  `heartbeat_seconds`, so a reader in another process can tell a stream whose process
  died (`core.resume`: `lost` after `lost_after_seconds` of silence).
- `Recorder.end()` marks the stream ended; its buffer is then kept `retention_seconds`
  after the end (`core.resume.expiry_after_end`); a running one `lost_after_seconds +
  retention_seconds` after its last write (so a dead process's stream is reported lost
  before it expires). Expired streams are pruned by the writer every `prune_seconds`.
- Reads in the process that records a stream come from memory (no wait for the
  writer); elsewhere from storage. A tail in another process polls every
  `poll_seconds`; in this one it wakes as each event is added.
- Tenant isolation: a stream is read only by its tenant; another tenant's id is
  `NotFound`, like an unknown one. On shared storage (Postgres) an id not found is
  asked again for two flush intervals first: a stream that began in another process
  moments ago may not be written yet. An expired buffer is `Gone` (410) until pruned.
- A failed batch (the database's own error) is logged and tried again after
  `flush_seconds`; nothing is dropped. `close()` writes what is left (call it before
  the storage closes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import trio
from attrs import Attribute, field, frozen, validators

from adapters.clock import Clock
from adapters.follow import follow_events
from adapters.storage.base import Storage
from adapters.storage.streams import StoredEvent, StreamHead, StreamWrite
from core import resume
from core.errors import Gone, NotFound, UpstreamError

log = logging.getLogger("umg.streams")


def _positive(instance: object, attribute: Attribute[float], value: float) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"streams.{attribute.name} must be a number > 0, not {value!r}")


@frozen
class StreamSettings:
    """`[streams]` in the config file (docs/configuration.md)."""

    # record /v1/responses streams (a request's `"store": false` opts out)
    buffer: bool = True
    # streams whose client went away that may go on to their end (the rest are cut)
    max_detached: int = field(default=64, validator=validators.ge(0))
    retention_seconds: float = field(default=600.0, validator=_positive)
    flush_seconds: float = field(default=0.1, validator=_positive)
    poll_seconds: float = field(default=0.1, validator=_positive)
    heartbeat_seconds: float = field(default=5.0, validator=_positive)
    lost_after_seconds: float = field(default=30.0, validator=_positive)
    prune_seconds: float = field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.lost_after_seconds <= self.heartbeat_seconds:
            raise ValueError("streams.lost_after_seconds must be longer than heartbeat_seconds")


class StreamLost(UpstreamError):
    """The process running a stream went away before its end (its answer will not come)."""

    code = "stream_lost"


class Recorder:
    """One stream being recorded (see `StreamLog.open`)."""

    def __init__(self, log_: StreamLog, stream_id: str, tenant: str) -> None:
        self._log = log_
        self.id = stream_id
        self.tenant = tenant
        self.events: list[StoredEvent] = []
        self.stored = 0  # events[:stored] are in the database
        self.ended = False
        self.ended_at: float | None = None
        self.written_at: float | None = None  # when the head was last written
        self._waiting: trio.Event | None = None  # set at the next change (made by `changed`)

    def add(self, seq: int, event: str | None, data: str) -> None:
        if self.ended:
            return
        self.events.append(StoredEvent(seq, event, data))
        self._changed()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.ended_at = self._log.clock.epoch()
            self._changed()

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else resume.FROM_START

    def head(self, now: float) -> StreamHead:
        settings = self._log.settings
        if self.ended_at is not None:
            expires = resume.expiry_after_end(self.ended_at, settings.retention_seconds)
        else:  # kept while it runs; if its process dies, lost first, then expired
            expires = now + settings.lost_after_seconds + settings.retention_seconds
        return StreamHead(self.id, self.tenant, self.ended, self.last_seq, now, expires)

    def after(self, seq: int) -> list[StoredEvent]:
        return [e for e in self.events if e.seq > seq]

    async def changed(self) -> None:
        """Until the next event or the end."""
        if self._waiting is None:
            self._waiting = trio.Event()
        await self._waiting.wait()

    def _changed(self) -> None:
        waiting, self._waiting = self._waiting, None  # an Event only while a tail waits
        if waiting is not None:
            waiting.set()
        self._log.dirty(self)


class StreamLog:
    def __init__(self, storage: Storage, clock: Clock, settings: StreamSettings) -> None:
        self.storage = storage
        self.clock = clock
        self.settings = settings
        self._local: dict[str, Recorder] = {}
        self._dirty: dict[str, Recorder] = {}
        self._wake = trio.Event()
        self._started = False
        self._closing = False
        self._stopped = trio.Event()
        self._next_prune = 0.0
        self._writing = trio.Lock()  # one batch at a time (the writer, or `flush`)
        self.batches = 0  # transactions written (tests and benchmarks)

    # -- recording ----------------------------------------------------------------------

    def open(self, stream_id: str, tenant: str) -> Recorder:
        recorder = Recorder(self, stream_id, tenant)
        self._local[stream_id] = recorder
        self.dirty(recorder)  # the head is written even before the first event
        return recorder

    def dirty(self, recorder: Recorder) -> None:
        if self._closing and not self._started:
            return
        self._dirty[recorder.id] = recorder
        if not self._started:
            self._started = True
            trio.lowlevel.spawn_system_task(self._run, name="umg-stream-writer")
        self._wake.set()

    async def flush(self) -> None:
        """Write what is recorded and not yet written, now."""
        await self._write()

    async def close(self) -> None:
        """Write everything recorded so far, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._started:
            await self._stopped.wait()

    async def _run(self) -> None:
        try:
            while True:
                self._beat()
                if not self._dirty:
                    if self._closing:
                        return
                    self._wake = trio.Event()
                    with trio.move_on_after(self.settings.heartbeat_seconds):
                        await self._wake.wait()
                    continue
                if not self._closing:
                    await trio.sleep(self.settings.flush_seconds)  # gather the batch
                if not await self._write():
                    if self._closing:
                        return  # logged; a closing process tries once
                    await trio.sleep(self.settings.flush_seconds)
                await self._prune()
        finally:
            self._stopped.set()

    def _beat(self) -> None:
        """Running streams whose head has not been written for a heartbeat: write it."""
        now = self.clock.epoch()
        for recorder in self._local.values():
            written = recorder.written_at
            if not recorder.ended and (written is None or now - written >= self.settings.heartbeat_seconds):
                self._dirty[recorder.id] = recorder

    async def _write(self) -> bool:
        async with self._writing:
            if not self._dirty:
                return True
            return await self._write_batch()

    async def _write_batch(self) -> bool:
        batch, self._dirty = self._dirty, {}
        now = self.clock.epoch()
        writes = [
            StreamWrite(r.head(now), tuple(r.events[r.stored :])) for r in batch.values()
        ]
        self.batches += 1
        try:
            with trio.CancelScope(shield=True):
                await self.storage.stream_write(writes)
        except self.storage.errors as err:
            log.error("stream writer: a batch of %d stream(s) failed: %s", len(writes), err)
            for key, recorder in batch.items():
                self._dirty.setdefault(key, recorder)
            return False
        for recorder, write in zip(batch.values(), writes, strict=True):
            recorder.stored += len(write.events)
            recorder.written_at = now
            if write.head.ended and recorder.stored == len(recorder.events):
                self._local.pop(recorder.id, None)  # all in the database from here on
        return True

    async def _prune(self) -> None:
        now = self.clock.epoch()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.prune_seconds
        try:
            with trio.CancelScope(shield=True):
                pruned = await self.storage.stream_prune(now)
        except self.storage.errors as err:
            log.warning("stream writer: pruning expired streams failed: %s", err)
            return
        if pruned:
            log.info("pruned %d expired stream buffer(s)", pruned)

    # -- reading ------------------------------------------------------------------------

    async def read(self, tenant: str, stream_id: str, after: int) -> tuple[StreamHead, list[StoredEvent]]:
        """The stream's head and its events after `after`; NotFound, Gone or StreamLost."""
        now = self.clock.epoch()
        local = self._local.get(stream_id)
        if local is not None and local.tenant == tenant:
            head, events = local.head(now), local.after(after)
        else:
            head, events = await self._stored(tenant, stream_id, after)
        state = resume.availability(
            ended=head.ended,
            updated_at=head.updated_at,
            expires_at=head.expires_at,
            now=now,
            lost_after=self.settings.lost_after_seconds,
        )
        if state == "expired":
            raise Gone(
                f"The stored events of response '{stream_id}' have expired (they are kept "
                f"{self.settings.retention_seconds:g} seconds after the answer ends)",
                param="response_id",
            )
        if state == "lost" and not events:
            raise StreamLost(
                f"The gateway process that ran response '{stream_id}' stopped before the end"
            )
        return head, events

    async def _stored(
        self, tenant: str, stream_id: str, after: int
    ) -> tuple[StreamHead, list[StoredEvent]]:
        """From storage. With other processes (shared storage) an id not there yet may be
        a stream that began elsewhere less than a flush ago: asked again until two flush
        intervals have passed, then NotFound."""
        give_up = self.clock.now() + (2 * self.settings.flush_seconds if self.storage.shared else 0)
        while True:
            head, events = await self.storage.stream_read(tenant, stream_id, after)
            if head is not None:
                return head, events
            if self.clock.now() >= give_up:
                raise NotFound(f"No response with id '{stream_id}'", param="response_id")
            await trio.sleep(self.settings.poll_seconds)

    def tail(
        self,
        tenant: str,
        stream_id: str,
        first: tuple[StreamHead, list[StoredEvent]],
        after: int,
        *,
        keepalive: float = math.inf,
    ) -> AsyncIterator[list[StoredEvent]]:
        """From `first` (what `read(tenant, stream_id, after)` gave), the events in
        batches as they come, until the end (adapters/follow.py's loop). An empty batch:
        nothing came for `keepalive` seconds. StreamLost or Gone end it by raising."""

        async def read(seq: int) -> tuple[StreamHead, list[StoredEvent]]:
            return await self.read(tenant, stream_id, seq)

        async def wait(seq: int, until: float) -> None:
            await self._wait(stream_id, seq, until)

        return follow_events(first, after, read=read, wait=wait, clock=self.clock, keepalive=keepalive)

    async def _wait(self, stream_id: str, after: int, until: float) -> None:
        """Until there may be events after `after`: as they are added in this process,
        polled every `poll_seconds` elsewhere; at the latest `until`."""
        local = self._local.get(stream_id)
        with trio.move_on_at(until):
            if local is not None:
                if local.last_seq <= after and not local.ended:
                    await local.changed()
            else:
                await trio.sleep(self.settings.poll_seconds)


__all__ = ["Recorder", "StreamLog", "StreamSettings", "StreamLost"]
