"""Schema migrations: numbered SQL files per backend, applied once each, in order.

Owns: finding the migration files (`schema/<backend>/NNN_name.sql`, shipped as package
data) and splitting them into statements. Applying them is each backend's `migrate()`,
which records every applied number in `schema_version` inside the same transaction, so a
migration is applied entirely or not at all, and concurrent migrators serialize (SQLite
`BEGIN IMMEDIATE`, Postgres an advisory transaction lock).

Rules: never edit a migration that has shipped; add the next number.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

from attrs import frozen


@frozen
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements (split with SQLite's own notion of a complete one)."""
        out: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            if not pending and (not line.strip() or line.lstrip().startswith("--")):
                continue
            pending += line
            if sqlite3.complete_statement(pending):
                out.append(pending.strip())
                pending = ""
        if pending.strip():
            raise ValueError(f"migration {self.name}: unterminated statement {pending!r}")
        return out


def migrations(backend: str) -> list[Migration]:
    """The migrations of `backend` ("sqlite" or "postgres"), lowest version first."""
    folder = resources.files("adapters.storage.schema").joinpath(backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, _ = entry.name.partition("_")
            found.append(Migration(int(number), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers for {backend}: {versions}")
    return found
