"""``SqliteEventStore``: the embedded event log, one SQLite file in WAL mode."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..codec import dumps, loads
from ..errors import AppError, ErrorCode, StoreUnavailable, describe
from ..models import Appended, ChannelBounds, Event, NewEvent
from ..ports import EventStore
from .migrate import migrate_sqlite
from .rules import (
    AppendPlan,
    Key,
    check_epoch_selection,
    encode_data,
    idempotency_keys,
    upper_bound,
    wants_prune,
)

_COLUMNS = "e.id, e.channel, e.seq, e.type, e.data, e.sender, e.client_msg_id, e.created_at"

# CROSS JOIN keeps the key list as the outer loop: one index probe per key
_SELECT_STORED = f"""
SELECT {_COLUMNS} FROM json_each(?) AS k CROSS JOIN events e
ON e.channel = json_extract(k.value, '$[0]') AND e.client_msg_id = json_extract(k.value, '$[1]')"""

_ADVANCE = """
INSERT INTO channels (name, last_seq, created_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + excluded.last_seq"""

_BOUNDS = "SELECT last_seq, first_seq, epoch FROM channels WHERE name = ?"

# the epoch comes from the column default
_CREATE = "INSERT INTO channels (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"

# the same expression as the column default (SQLite has no SET ... = DEFAULT),
# evaluated per row: each channel gets its own new epoch
_RESET_EPOCHS = """
UPDATE channels SET epoch = lower(hex(randomblob(6)))
WHERE (:names IS NULL OR name IN (SELECT value FROM json_each(:names)))
  AND (:namespace IS NULL OR substr(name, 1, length(:namespace) + 1) = :namespace || ':')"""

_HEADS = "SELECT name, last_seq FROM channels WHERE name IN (SELECT value FROM json_each(?))"

_NAMESPACES = "SELECT DISTINCT substr(name, 1, instr(name, ':') - 1) FROM channels ORDER BY 1"

_INSERT = """
INSERT INTO events (channel, seq, id, type, data, sender, client_msg_id, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""

_READ = f"""
SELECT {_COLUMNS} FROM events e
WHERE e.channel = ? AND e.seq > ? AND e.seq < ? ORDER BY e.seq LIMIT ?"""

_READ_LAST = f"""
SELECT {_COLUMNS} FROM events e
WHERE e.channel = ? AND e.seq < ? ORDER BY e.seq DESC LIMIT ?"""

# keep_from: the first seq to keep; retention always cuts a prefix, so the
# retained events stay the contiguous range first_seq..last_seq.
_PRUNE_TARGETS = """
WITH t AS MATERIALIZED (
    SELECT c.name, c.first_seq, max(
        CASE WHEN :max_events IS NULL THEN 0 ELSE c.last_seq - :max_events + 1 END,
        CASE WHEN :cutoff IS NULL THEN 0 ELSE coalesce((
            SELECT max(e.seq) + 1 FROM events e INDEXED BY events_channel_created_at
            WHERE e.channel = c.name AND e.created_at < :cutoff), 0) END
    ) AS keep_from
    FROM channels c
    WHERE substr(c.name, 1, length(:namespace) + 1) = :namespace || ':'
)
SELECT name, keep_from FROM t WHERE keep_from > first_seq"""

_PRUNE_DELETE = "DELETE FROM events WHERE channel = ? AND seq < ?"

_PRUNE_MOVE_FIRST = "UPDATE channels SET first_seq = ?2 WHERE name = ?1 AND first_seq < ?2"


class SqliteEventStore(EventStore):
    """``EventStore`` on one SQLite file (aiosqlite), the embedded default.

    Give either ``path`` (a file, created with its folder if missing, or
    ``":memory:"``) or a ready aiosqlite ``connection`` (opened with
    ``isolation_level=None``; left open on ``close``). One connection serves
    everything, so an ``asyncio.Lock`` keeps one transaction at a time on it;
    ``BEGIN IMMEDIATE`` and ``busy_timeout_ms`` serialize writers of other
    processes sharing the file.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        connection: aiosqlite.Connection | None = None,
        busy_timeout_ms: int = 5000,
        synchronous: str = "FULL",
    ) -> None:
        if (path is None) == (connection is None):
            raise ValueError("SqliteEventStore needs exactly one of path= or connection=")
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown SQLite synchronous mode {synchronous!r}")
        self._path = path
        self._conn = connection
        self._owns_conn = connection is None
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._synchronous = synchronous.upper()
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise StoreUnavailable("event store is closed")
        if self._started:
            return
        try:
            if self._conn is None:
                self._conn = await aiosqlite.connect(self._prepare_path(), isolation_level=None)
            await self._configure(self._conn)
        except (sqlite3.Error, OSError) as exc:
            await self._release()
            raise StoreUnavailable(f"cannot open SQLite database: {describe(exc)}") from exc
        try:
            async with self._session("migrate", write=True) as conn:
                await migrate_sqlite(conn)
        except BaseException:
            await self._release()
            raise
        self._started = True

    def _prepare_path(self) -> str:
        path = str(self._path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path

    async def _configure(self, conn: aiosqlite.Connection) -> None:
        # busy_timeout first: switching to WAL needs a lock that a second process
        # opening the same new file at the same moment may hold
        await conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        await self._enable_wal(conn)
        # FULL makes a commit survive power loss, which "durable before acknowledged" needs
        await conn.execute(f"PRAGMA synchronous={self._synchronous}")

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """WAL lets readers in other processes run during a commit. The mode
        switch does not always wait on the busy handler, so retry it briefly."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                await conn.execute_fetchall("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            await self._release()

    async def _release(self) -> None:
        if self._conn is not None and self._owns_conn:
            conn, self._conn = self._conn, None
            await conn.close()

    async def append(self, batch: Sequence[NewEvent]) -> list[Appended]:
        if not batch:
            return []
        async with self._session("append", write=True) as conn:
            plan = AppendPlan(batch, await self._stored(conn, batch))
            created: list[Event] = []
            if plan.fresh:
                now = time.time_ns() // 1_000_000
                heads = await self._advance(conn, plan.counts, now)
                created = plan.events(heads, now)
                await conn.executemany(_INSERT, [_row(event) for event in created])
        return plan.results(created)

    async def read(
        self,
        channel: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int,
    ) -> list[Event]:
        if limit <= 0:
            return []
        rows = await self._fetch("read", _READ, (channel, after, upper_bound(before), limit))
        return [_event(row) for row in rows]

    async def read_last(
        self,
        channel: str,
        *,
        before: int | None = None,
        limit: int,
    ) -> list[Event]:
        if limit <= 0:
            return []
        rows = await self._fetch("read", _READ_LAST, (channel, upper_bound(before), limit))
        return [_event(row) for row in reversed(rows)]

    async def bounds(self, channel: str) -> ChannelBounds:
        rows = await self._fetch("bounds", _BOUNDS, (channel,))
        return _bounds(rows[0]) if rows else ChannelBounds(0, 1)

    async def ensure(self, channel: str) -> ChannelBounds:
        rows = await self._fetch("ensure", _BOUNDS, (channel,))
        if not rows:  # once per channel: take the write lock only to create the row
            async with self._session("ensure", write=True, durable=False) as conn:
                await conn.execute(_CREATE, (channel, time.time_ns() // 1_000_000))
                rows = list(await conn.execute_fetchall(_BOUNDS, (channel,)))
        return _bounds(rows[0])

    async def reset_epochs(
        self, *, channels: Sequence[str] | None = None, namespace: str | None = None
    ) -> int:
        names = check_epoch_selection(channels, namespace)
        params = {"names": None if names is None else dumps(names).decode(), "namespace": namespace}
        async with self._session("reset_epochs", write=True) as conn:
            cursor = await conn.execute(_RESET_EPOCHS, params)
        return max(0, cursor.rowcount)

    async def heads(self, channels: Sequence[str]) -> dict[str, int]:
        names = list(dict.fromkeys(channels))
        async with self._session("heads") as conn:
            found = await self._heads(conn, names)
        return {name: found.get(name, 0) for name in names}

    async def namespaces(self) -> list[str]:
        rows = await self._fetch("namespaces", _NAMESPACES, ())
        return [str(row[0]) for row in rows]

    async def prune(
        self,
        namespace: str,
        *,
        max_age_seconds: float | None = None,
        max_events: int | None = None,
    ) -> int:
        if not wants_prune(max_age_seconds, max_events):
            return 0
        cutoff = None
        if max_age_seconds is not None:
            cutoff = time.time_ns() // 1_000_000 - int(max_age_seconds * 1000)
        params = {"namespace": namespace, "max_events": max_events, "cutoff": cutoff}
        async with self._session("prune", write=True) as conn:
            rows = await conn.execute_fetchall(_PRUNE_TARGETS, params)
            targets = [(str(row[0]), int(row[1])) for row in rows]
            if not targets:
                return 0
            cursor = await conn.executemany(_PRUNE_DELETE, targets)
            await conn.executemany(_PRUNE_MOVE_FIRST, targets)
        return max(0, cursor.rowcount)

    async def ping(self) -> None:
        async with self._session("ping") as conn:
            await conn.execute_fetchall("SELECT 1")

    # -- transactions --------------------------------------------------------

    async def _fetch(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._session(what) as conn:
            return list(await conn.execute_fetchall(sql, params))

    @asynccontextmanager
    async def _session(
        self, what: str, *, write: bool = False, durable: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, held alone; with ``write`` inside ``BEGIN IMMEDIATE`` .. ``COMMIT``.

        Reads take the lock too: on a shared connection they would otherwise
        see another task's uncommitted rows. ``durable=False`` commits without
        waiting for the disk: for writes that a crash may lose without harm
        because any later durable commit (WAL frames are written in order)
        makes them durable first.
        """
        async with self._lock:
            conn = self._conn
            if conn is None or self._closed:
                state = "closed" if self._closed else "not started"
                raise StoreUnavailable(f"event store is {state}")
            try:
                if not write:
                    yield conn
                    return
                if not durable:
                    await conn.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync at commit
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    await _rollback(conn)
                    raise
                finally:
                    if not durable:
                        await conn.execute(f"PRAGMA synchronous={self._synchronous}")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"event store {what} failed: {describe(exc)}") from exc
            except UnicodeEncodeError as exc:  # a lone surrogate in a text column
                refused = AppError(ErrorCode.BAD_REQUEST, f"event store refused the input: {exc}")
                raise refused from exc

    async def _stored(
        self, conn: aiosqlite.Connection, batch: Sequence[NewEvent]
    ) -> dict[Key, Event]:
        keys = idempotency_keys(batch)
        if not keys:
            return {}
        rows = await conn.execute_fetchall(_SELECT_STORED, (dumps(keys).decode(),))
        events = [_event(row) for row in rows]
        return {(e.channel, e.client_msg_id): e for e in events if e.client_msg_id is not None}

    async def _advance(
        self, conn: aiosqlite.Connection, counts: dict[str, int], now: int
    ) -> dict[str, int]:
        await conn.executemany(_ADVANCE, [(name, n, now) for name, n in counts.items()])
        return await self._heads(conn, list(counts))

    async def _heads(self, conn: aiosqlite.Connection, names: list[str]) -> dict[str, int]:
        rows = await conn.execute_fetchall(_HEADS, (dumps(names).decode(),))
        return {str(row[0]): int(row[1]) for row in rows}


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # BEGIN itself failed, or SQLite already rolled back


def _row(event: Event) -> tuple[Any, ...]:
    return (
        event.channel,
        event.seq,
        event.id,
        event.type,
        encode_data(event.data),
        event.sender,
        event.client_msg_id,
        event.ts,
    )


def _bounds(row: Sequence[Any]) -> ChannelBounds:
    return ChannelBounds(int(row[0]), int(row[1]), str(row[2]))


def _event(row: Iterable[Any]) -> Event:
    id_, channel, seq, type_, data, sender, client_msg_id, created_at = row
    return Event(
        id=str(id_),
        channel=str(channel),
        seq=int(seq),
        type=str(type_),
        data=loads(data),
        sender=str(sender),
        ts=int(created_at),
        client_msg_id=client_msg_id,
    )

