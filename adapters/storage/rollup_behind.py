"""SQLite's rollups written behind the ledger: the rows committed and not yet added, the
upserts that add them, and the watermark that says which rows the rollups hold.

Owns: `Behind`, the ledger rows SQLite's writer has committed since the rollups were
last written (in the owning process's memory, in commit order), the transaction part
that adds them to every rollup (`rollup.py`'s hourly tables, `rollup_wide.py`'s daily
and all-tenant ones) and moves the watermark, and `fold`, which adds the rows a crash
left above the watermark. When the writer writes them is `sqlite_writer.py`'s.

Rules:
- The watermark (`rollup_watermark.done`, migration 016: the `usage` rowid the rollups
  hold every row up to, set to the ledger's highest rowid when it was added) moves in
  the transaction that adds the rows below it, so the rollups are exactly the ledger's
  rows up to it, never a row twice. Rows above it are this process's `Behind` (one
  process writes the ledger: the owner of the file, `owner.py`), or rows a crash left
  unadded: `fold` adds them before the process writes anything else.
- SQLite gives a new row `max(rowid) + 1`, so every row committed after the watermark
  moved is above it, as long as the rows at the top are never deleted while the
  watermark is above what is left: deleting ledger rows lowers it to the highest rowid
  left (`LOWER`, in the deleting transaction; safe in any process, since what is left
  up to there is added already), and so does `fold` when nothing is above it (a
  `VACUUM` may give rows new, smaller rowids: after a clean close every row is added,
  so that is exact; after a crash, the rows must be folded before a `VACUUM`).
- Only rows the INSERT inserted are kept (a retried `request_id` adds nothing; a batch
  rolled back keeps nothing: rows are kept when their transaction has committed,
  `sqlite_conn.py`'s `committed`).
- What is kept in memory is bounded: past `CAP` rows (writes of the rollups failing
  while batches commit) the rows are let go and only the fact is kept (`in_ledger`):
  they are all in the ledger above the watermark, so the next write reads them back
  from there (`fold`) instead of from memory. Nothing is lost and nothing counted twice.
- Rows with the same key are added up first (`rollup.contributions`, `rollup_wide.sums`):
  one upsert per key and table. A set whose sums SQLite cannot take (a token sum beyond
  64 bits) is added again row by row in the same transaction, as a ledger batch was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.storage import codec, rollup, rollup_wide
from adapters.storage.records import UsageRecord

Conn = Any  # an sqlite3.Connection in a transaction

_UPSERT_HOURLY = rollup.upsert_hourly("?", text_money=True)
_UPSERT_BINS = rollup.upsert_bins("?")
WATERMARK = "SELECT done FROM rollup_watermark"
_MOVE = "UPDATE rollup_watermark SET done = ?"
# after deleting ledger rows: at most the highest rowid left (see the rules)
LOWER = "UPDATE rollup_watermark SET done = min(done, (SELECT coalesce(max(rowid), 0) FROM usage))"
# the rollups were built from the whole ledger (`rollup.backfill_all`, behind the writer)
AT_LEDGER_END = "UPDATE rollup_watermark SET done = (SELECT coalesce(max(rowid), 0) FROM usage)"
_ABOVE = f"SELECT rowid, {', '.join(codec.columns(UsageRecord))} FROM usage WHERE rowid > ? ORDER BY rowid"
# what a set of sums can be refused for: an int beyond 64 bits, a cost the text cannot hold
_SUMS_REFUSED = (ArithmeticError, ValueError)  # OverflowError and decimal errors are ArithmeticErrors

BOUND = 4096  # rows kept before they are written at once, whatever `rollup_seconds` says
CAP = 8 * BOUND  # rows held in memory at most (see the rules): past it, read back from the ledger


class Behind:
    """The rows committed to the ledger and not yet to the rollups, in commit order, and
    the highest rowid among them. Changed only under the connection's lock (in a
    transaction's `committed`), so a transaction that writes them sees them unchanged."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.last = 0  # the highest rowid kept (0: none)
        self.in_ledger = False  # past CAP: the rows are not held, the ledger has them

    def __len__(self) -> int:
        return CAP if self.in_ledger else len(self.records)

    def keep(self, records: Sequence[UsageRecord], last: int) -> None:
        """A committed transaction's inserted rows, the last of them at rowid `last`."""
        if not records:
            return
        self.last = last
        if self.in_ledger:
            return
        self.records += records
        if len(self.records) > CAP:
            self.records = []
            self.in_ledger = True

    def written(self) -> None:
        """The transaction that wrote them has committed."""
        self.records = []
        self.last = 0
        self.in_ledger = False


def add(c: Conn, records: Sequence[UsageRecord], wide: Sequence[rollup_wide.SparseUpserts]) -> None:
    """Add `records` to every rollup (`wide`: the daily and all-tenant tables' upserts),
    in the transaction on `c`."""
    if not records:
        return
    c.execute("SAVEPOINT rollup_sums")
    try:
        _upserts(c, records, wide)
    except _SUMS_REFUSED:
        c.execute("ROLLBACK TO rollup_sums")
        for rec in records:  # each row's values fit: its ledger INSERT bound them
            _upserts(c, [rec], wide)
    c.execute("RELEASE rollup_sums")


def _upserts(c: Conn, records: Sequence[UsageRecord], wide: Sequence[rollup_wide.SparseUpserts]) -> None:
    hourly, bins = rollup.contributions(records)
    # one statement per rollup table: a row's cost is added in the upsert (MONEY_ADD)
    c.executemany(_UPSERT_HOURLY, rollup.money_texts(hourly))
    c.executemany(_UPSERT_BINS, bins)
    wide_sums = rollup_wide.sums(records)
    for upserts in wide:
        for sql, adds in upserts.of(wide_sums[upserts.wide]):
            c.executemany(sql, rollup.money_texts(adds, len(upserts.wide.keys)))


def write(c: Conn, behind: Behind, wide: Sequence[rollup_wide.SparseUpserts]) -> int:
    """Add the rows `behind` keeps and move the watermark to the last of them, in the
    transaction on `c` (call `behind.written()` once it has committed); how many. Past
    `CAP` (`behind.in_ledger`) they are read back from the ledger: every row above the
    watermark (`fold`)."""
    if behind.in_ledger:
        return fold(c, wide)
    if not behind.records:
        return 0
    add(c, behind.records, wide)
    c.execute(_MOVE, (behind.last,))
    return len(behind.records)


def fold(c: Conn, wide: Sequence[rollup_wide.SparseUpserts]) -> int:
    """Add the ledger rows above the watermark (a crash left them) and move it to the
    last, or lower it to the last row (`LOWER`: rows went by another way than a prune,
    or a `VACUUM` gave them new rowids), in the transaction on `c`; how many."""
    (done,) = c.execute(WATERMARK).fetchone()
    rows = c.execute(_ABOVE, (done,)).fetchall()
    if rows:
        add(c, [codec.from_sqlite_row(UsageRecord, tuple(r[1:])) for r in rows], wide)
        c.execute(_MOVE, (rows[-1][0],))
    else:
        c.execute(LOWER)
    return len(rows)
