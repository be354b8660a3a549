"""Idempotency key rows (`idempotency_keys`, migration 004) and their one atomic step.

Owns: the row <-> `core.idempotency.Record` mapping and the SQL of
`Storage.idempotency_step`, shared by both backends (they differ in placeholders, the
jsonb cast and the row lock). The step runs `fn` (pure: `core.idempotency.step`) on the
row inside the caller's transaction:

- no row: `fn(None)`; a new record is INSERTed with ON CONFLICT DO NOTHING, the one
  statement that claims a fresh key across processes. If another transaction inserted
  the row first (nothing inserted), the row is read again under its lock and `fn` runs
  on it instead;
- a row: it is read with its lock (Postgres `FOR UPDATE`; SQLite holds the database's
  write lock from `BEGIN IMMEDIATE`), then updated, deleted (`fn` gave None) or left.

Answers are stored as JSON `{"status", "headers": [[name, value], ...], "chunks":
[base64, ...], "request_id"}` (base64: the body bytes as sent, whatever they hold;
`request_id`, the gateway's id of the request that got the answer, is absent from
answers kept before it was recorded).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from attrs import frozen

from core.idempotency import Answer, Record

T = TypeVar("T")
StepFn = Callable[[Record | None], tuple[T, Record | None]]
ATTEMPTS = 3  # an insert lost to a concurrent one, then the row deleted again: rare


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...


class Conn(Protocol):
    def execute(self, sql: Any, args: Any = ...) -> Any: ...


@frozen
class Dialect:
    mark: str  # the driver's placeholder
    json_mark: str  # the placeholder of the answer column
    lock: str  # appended to the SELECT


SQLITE = Dialect("?", "?", "")
POSTGRES = Dialect("%s", "%s::jsonb", " FOR UPDATE")


def answer_json(answer: Answer) -> str:
    data: dict[str, Any] = {
        "status": answer.status,
        "headers": [list(h) for h in answer.headers],
        "chunks": [base64.b64encode(c).decode("ascii") for c in answer.chunks],
    }
    if answer.request_id is not None:
        data["request_id"] = answer.request_id
    return json.dumps(data, separators=(",", ":"))


def answer_from(value: str | dict[str, Any]) -> Answer:
    data = json.loads(value) if isinstance(value, str) else value
    return Answer(
        status=int(data["status"]),
        headers=tuple((str(n), str(v)) for n, v in data["headers"]),
        chunks=tuple(base64.b64decode(c) for c in data["chunks"]),
        request_id=str(data["request_id"]) if data.get("request_id") else None,
    )


def _values(record: Record) -> tuple[Any, ...]:
    answer = None if record.answer is None else answer_json(record.answer)
    return (record.fingerprint, record.state, record.owner, record.locked_until,
            record.expires_at, answer)


def _record(row: tuple[Any, ...]) -> Record:
    fingerprint, state, owner, locked_until, expires_at, answer = row
    return Record(
        fingerprint=fingerprint,
        state=state,
        owner=owner,
        locked_until=float(locked_until),
        expires_at=None if expires_at is None else float(expires_at),
        answer=None if answer is None else answer_from(answer),
    )


def step_in(c: Conn, d: Dialect, tenant: str, key: str, fn: StepFn[T]) -> T:
    """Apply `fn` to the row of (tenant, key) in the open transaction of `c`."""
    m = d.mark
    where = f"WHERE tenant = {m} AND key = {m}"
    select = (
        "SELECT fingerprint, state, owner, locked_until, expires_at, answer"
        f" FROM idempotency_keys {where}{d.lock}"
    )
    for _ in range(ATTEMPTS):
        row = c.execute(select, (tenant, key)).fetchone()
        current = None if row is None else _record(tuple(row))
        result, new = fn(current)
        if current is None:
            if new is None:
                return result
            inserted = c.execute(
                "INSERT INTO idempotency_keys (tenant, key, fingerprint, state, owner,"
                f" locked_until, expires_at, answer) VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m},"
                f" {d.json_mark}) ON CONFLICT (tenant, key) DO NOTHING",
                (tenant, key, *_values(new)),
            )
            if inserted.rowcount == 1:
                return result
            continue  # claimed by another transaction first: decide on its row
        if new is None:
            c.execute(f"DELETE FROM idempotency_keys {where}", (tenant, key))
        elif new != current:
            c.execute(
                f"UPDATE idempotency_keys SET fingerprint = {m}, state = {m}, owner = {m},"
                f" locked_until = {m}, expires_at = {m}, answer = {d.json_mark} {where}",
                (*_values(new), tenant, key),
            )
        return result
    raise RuntimeError(f"idempotency key row kept changing under {ATTEMPTS} attempts")
