"""A small in-process cache of key lookups by prefix, so a request does not query keys.

Owns: how long a key lookup may be reused and how the cache forgets. Both backends use
it in `key_by_prefix`.

Rules:
- An entry (the `KeyRecord`, or "no such key") is reused for at most `ttl` seconds of
  the gateway's monotonic clock (`adapters/clock`), then read again. So a change made
  by another process (a key revoked with `umg keys revoke`, or by another gateway on the
  same Postgres) is seen here within `ttl`; a key created elsewhere after this process
  was asked for its prefix is refused for at most `ttl` too.
- Changes made through this process apply at once: `insert_key` and `revoke_key` call
  `forget(prefix)`. A lookup that started before a `forget` and ends after it does not
  store its (possibly stale) answer: `ticket()` taken before the read, `put` with it.
- The cache holds records, never plain keys: the caller still compares the presented
  key with `secret_hash` on every request, and a revoked record is cached as revoked.
- Bounded: at most `max_keys` known keys and, separately, `max_misses` unknown
  prefixes (so a flood of made-up keys cannot push real ones out), least recently
  used first out.
- One read per prefix at a time: lookups that miss while a read of the same prefix is
  in flight wait for it and take its answer, so an entry that expires under load costs
  one read, not one per request in flight. If that answer was not stored (a `forget`
  meanwhile, or the read failed), each waiter looks again (and one of them reads).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from adapters.clock import Clock
from adapters.storage.records import KeyRecord

KEY_CACHE_SECONDS = 1.0


class KeyCache:
    def __init__(
        self,
        ttl: float = KEY_CACHE_SECONDS,
        *,
        max_keys: int = 10_000,
        max_misses: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        self.ttl = ttl
        self._max = {True: max_keys, False: max_misses}
        self._entries: dict[bool, OrderedDict[str, tuple[float, KeyRecord | None]]] = {
            True: OrderedDict(),
            False: OrderedDict(),
        }
        self._clock = clock
        self._generation = 0
        self._reading: dict[str, trio.Event] = {}  # prefix -> set when its read ends

    def _now(self) -> float:
        if self._clock is None:
            self._clock = Clock()  # created lazily: it needs a running Trio loop
        return self._clock.now()

    def get(self, prefix: str) -> tuple[bool, KeyRecord | None]:
        """(True, record or None) for a fresh entry; (False, None) when not cached."""
        for known in (True, False):
            entries = self._entries[known]
            entry = entries.get(prefix)
            if entry is None:
                continue
            if self._now() - entry[0] >= self.ttl:
                del entries[prefix]
                return False, None
            entries.move_to_end(prefix)
            return True, entry[1]
        return False, None

    async def lookup(
        self, prefix: str, read: Callable[[], Awaitable[KeyRecord | None]]
    ) -> KeyRecord | None:
        """The cached answer for `prefix`, else `await read()` (remembered), one read
        of a prefix at a time (see the module rules)."""
        while True:
            cached, record = self.get(prefix)
            if cached:
                return record
            pending = self._reading.get(prefix) if self.ttl > 0 else None
            if pending is None:
                break
            await pending.wait()
        done = self._reading[prefix] = trio.Event()
        ticket = self.ticket()
        try:
            record = await read()
            self.put(prefix, record, ticket)
        finally:
            if self._reading.get(prefix) is done:
                del self._reading[prefix]
            done.set()
        return record

    def ticket(self) -> int:
        return self._generation

    def put(self, prefix: str, record: KeyRecord | None, ticket: int) -> None:
        """Remember a lookup made after `ticket()`, unless something was forgotten since."""
        if ticket != self._generation or self.ttl <= 0:
            return
        self.forget_entry(prefix)
        entries = self._entries[record is not None]
        entries[prefix] = (self._now(), record)
        while len(entries) > self._max[record is not None]:
            entries.popitem(last=False)

    def forget_entry(self, prefix: str) -> None:
        for entries in self._entries.values():
            entries.pop(prefix, None)

    def forget(self, prefix: str) -> None:
        """The key `prefix` changed here: drop it, and any lookup in flight's answer."""
        self._generation += 1
        self.forget_entry(prefix)
        pending = self._reading.pop(prefix, None)
        if pending is not None:
            pending.set()  # its waiters look again: the answer in flight may be stale
