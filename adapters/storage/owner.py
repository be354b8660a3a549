"""Which process owns a SQLite file's rate-limit and budget state.

Owns: the lock that makes the embedded backend's in-memory state safe. A SQLite storage
keeps `state` rows in memory (`memstate.py`), so only one process at a time may change
them: it holds an exclusive `flock` on `<database>.lock`, next to the database, for as
long as the storage is open. The kernel releases it when the process ends, however it
ends, so a crash never leaves a stale lock. Another process that asks for the state
gets `StorageBusy` at once (no waiting). Writing the ledger takes it too (its rollups
are written behind, from the writer's memory: `rollup_behind.py`); processes that only
touch keys or jobs, or read the ledger (`umg keys ...`), never take the lock.
"""

from __future__ import annotations

import fcntl
import os


class StorageBusy(OSError):
    """Another process owns this SQLite file's state (a second `umg serve` on it)."""


class FileOwner:
    def __init__(self, database: str) -> None:
        self.path = f"{database}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (idempotent); `StorageBusy` if another process holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageBusy(
                f"another process already serves from {self.path.removesuffix('.lock')}"
                " (a SQLite database serves one gateway process; use Postgres for several)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
