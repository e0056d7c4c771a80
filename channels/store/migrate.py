"""Plain-SQL migrations shipped as package data, shared by both adapters.

Files live in ``migrations/<dialect>/NNNN_name.sql`` and are applied in version
order, all pending ones in one transaction together with their
``schema_migrations`` rows. A lock held for that transaction
(``pg_advisory_xact_lock`` / SQLite's ``BEGIN IMMEDIATE``) makes two processes
starting at once apply every file exactly once: the second waits, then finds
nothing pending.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger(__name__)

# arbitrary but fixed: every Switchboard process must contend for the same key
POSTGRES_LOCK_KEY = 0x5357_4254_4D49_4752  # "SWBTMIGR"

BOOTSTRAP = {
    "postgres": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ),
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    ),
}

_FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``version`` orders them, ``sql`` is the whole file."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """Every migration file of ``dialect`` ("postgres" or "sqlite"), by version."""
    folder = resources.files("channels.store").joinpath("migrations").joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {dialect}: {versions}")
    return found


def pending(migrations: list[Migration], applied: Collection[int]) -> list[Migration]:
    """The migrations not applied yet, in the order to apply them."""
    return [m for m in migrations if m.version not in applied]


async def migrate_postgres(conn: Any) -> None:
    """Apply pending PostgreSQL migrations on an asyncpg connection, all in one transaction.

    The transaction-scoped advisory lock makes a second process wait, then
    find everything applied.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", POSTGRES_LOCK_KEY)
        await conn.execute(BOOTSTRAP["postgres"])
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        for migration in pending(load_migrations("postgres"), {int(row[0]) for row in rows}):
            log.info("applying migration %04d_%s", migration.version, migration.name)
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )


async def migrate_sqlite(conn: aiosqlite.Connection) -> None:
    """Apply pending SQLite migrations; the caller holds ``BEGIN IMMEDIATE`` (the write lock)."""
    await conn.execute(BOOTSTRAP["sqlite"])
    rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
    for migration in pending(load_migrations("sqlite"), {int(row[0]) for row in rows}):
        log.info("applying migration %04d_%s", migration.version, migration.name)
        for statement in split_statements(migration.sql):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (migration.version, migration.name),
        )


def split_statements(sql: str) -> list[str]:
    """Split a script into single statements for drivers that run one at a time.

    sqlite3's ``executescript`` would COMMIT the surrounding transaction first,
    which breaks the all-or-nothing migration; so statements are cut at line ends
    where SQLite says a statement is complete.
    """
    statements: list[str] = []
    current = ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not _only_comments(current):
        raise ValueError(f"incomplete SQL statement at end of migration: {current.strip()[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
