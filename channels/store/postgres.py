"""``PostgresEventStore``: the event log in PostgreSQL, on an asyncpg pool."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from ..codec import dumps, loads
from ..errors import AppError, ErrorCode, StoreUnavailable, describe
from ..models import Appended, ChannelBounds, Event, NewEvent
from ..ports import EventStore
from .migrate import migrate_postgres
from .rules import (
    AppendPlan,
    Key,
    check_epoch_selection,
    idempotency_keys,
    new_event_id,
    upper_bound,
    wants_prune,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = Any  # asyncpg ships no type information

# A concurrent writer (another process) stored the same client_msg_id between
# our lookup and our insert, or lock order went wrong: the whole transaction is
# safe to run again, and the lookup will then see the winner's row.
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
# PostgreSQL refused a value (SQLSTATE class 22: a NUL character, say), or
# asyncpg could not encode one (a lone surrogate): the same input would fail
# again, so it is the caller's error, not an outage.
_INPUT_ERRORS = (asyncpg.DataError, asyncpg.exceptions._base.DataError)
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_COLUMNS = "id::text, channel, seq, type, data::text, sender, client_msg_id, created_at"

_SELECT_STORED = f"""
SELECT {_COLUMNS} FROM unnest($1::text[], $2::text[]) AS k(channel, client_msg_id)
JOIN events e USING (channel, client_msg_id)
WHERE e.client_msg_id IS NOT NULL"""

# One statement, so one round trip and its own transaction: advance each
# channel's head by its count ($1, $2), then insert the events numbered after
# the old head in batch order ($3: the events, a JSON array). ORDER BY:
# every writer locks channel rows in the same order, so two batches touching
# the same channels queue up instead of deadlocking. The timestamp is taken
# after the row locks, so ts never runs backwards within a channel; it is
# returned with the heads, and the caller numbers its events the same way.
_APPEND = """
WITH heads AS (
    INSERT INTO channels (name, last_seq)
    SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
    ON CONFLICT (name) DO UPDATE SET last_seq = channels.last_seq + EXCLUDED.last_seq
    RETURNING name, last_seq, date_trunc('milliseconds', clock_timestamp()) AS ts
), counts AS (
    SELECT * FROM unnest($1::text[], $2::bigint[]) AS n(name, count)
), stamp AS (
    SELECT max(ts) AS ts FROM heads
), inserted AS (
    INSERT INTO events (channel, seq, id, type, data, sender, client_msg_id, created_at)
    SELECT r.c, h.last_seq - n.count + row_number() OVER (PARTITION BY r.c ORDER BY r.o),
           r.i, r.t, r.d, r.u, r.m, stamp.ts
    FROM ROWS FROM (jsonb_to_recordset($3::jsonb) AS (c text, i uuid, t text, d jsonb, u text, m text))
        WITH ORDINALITY AS r(c, i, t, d, u, m, o)
    JOIN heads h ON h.name = r.c JOIN counts n ON n.name = r.c CROSS JOIN stamp
)
SELECT name, last_seq, ts FROM heads"""

_BOUNDS = "SELECT last_seq, first_seq, epoch FROM channels WHERE name = $1"

# A new row takes its epoch from the column default. Its RETURNING row is the
# answer; when the row exists, the SELECT is (it cannot see a row this statement
# inserts). Empty only when another transaction inserted the row after this
# statement's snapshot: ON CONFLICT waited for its commit, so a second read sees it.
_ENSURE = """
WITH created AS (
    INSERT INTO channels (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
    RETURNING last_seq, first_seq, epoch
)
SELECT last_seq, first_seq, epoch FROM created
UNION ALL
SELECT last_seq, first_seq, epoch FROM channels WHERE name = $1"""

# DEFAULT is evaluated per row: each channel gets its own new epoch
_RESET_EPOCHS = """
UPDATE channels SET epoch = DEFAULT
WHERE ($1::text[] IS NULL OR name = ANY($1::text[]))
  AND ($2::text IS NULL OR left(name, length($2::text) + 1) = $2::text || ':')"""

_HEADS = "SELECT name, last_seq FROM channels WHERE name = ANY($1::text[])"

_NAMESPACES = "SELECT DISTINCT split_part(name, ':', 1) FROM channels ORDER BY 1"

_READ = f"""
SELECT {_COLUMNS} FROM events
WHERE channel = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4"""

_READ_LAST = f"""
SELECT {_COLUMNS} FROM events
WHERE channel = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"""

# keep_from: the first seq to keep; retention always cuts a prefix, so the
# retained events stay the contiguous range first_seq..last_seq.
_PRUNE_TARGETS = """
WITH t AS MATERIALIZED (
    SELECT c.name, c.first_seq, GREATEST(
        CASE WHEN $2::bigint IS NULL THEN 0 ELSE c.last_seq - $2::bigint + 1 END,
        CASE WHEN $3::float8 IS NULL THEN 0 ELSE COALESCE((
            SELECT max(e.seq) + 1 FROM events e
            WHERE e.channel = c.name
              AND e.created_at < now() - make_interval(secs => $3::float8)), 0) END
    ) AS keep_from
    FROM channels c
    WHERE left(c.name, length($1::text) + 1) = $1::text || ':'
)
SELECT name, keep_from FROM t WHERE keep_from > first_seq"""

_PRUNE_DELETE = """
DELETE FROM events e USING unnest($1::text[], $2::bigint[]) AS t(name, keep_from)
WHERE e.channel = t.name AND e.seq < t.keep_from"""

_PRUNE_LOCK = "SELECT 1 FROM channels WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE"

_PRUNE_MOVE_FIRST = """
UPDATE channels c SET first_seq = t.keep_from
FROM unnest($1::text[], $2::bigint[]) AS t(name, keep_from)
WHERE c.name = t.name AND c.first_seq < t.keep_from"""


class PostgresEventStore(EventStore):
    """``EventStore`` on PostgreSQL (asyncpg), safe for many processes sharing one database.

    Give either ``url`` (the store opens and closes its own pool of
    ``min_size``..``max_size`` connections) or a ready ``pool`` (left open on
    ``close``). Conflicts between concurrent writers are retried up to
    ``max_attempts`` times. Values PostgreSQL refuses (NUL characters) raise
    ``AppError(bad_request)``; every other driver error ``StoreUnavailable``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        min_size: int = 2,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 30.0,
        max_attempts: int = 5,
    ) -> None:
        if (url is None) == (pool is None):
            raise ValueError("PostgresEventStore needs exactly one of url= or pool=")
        self._url = url
        self._pool: Any = pool
        self._owns_pool = pool is None
        self._pool_options = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": connect_timeout,
            "command_timeout": command_timeout,
            "reset": _keep_session,
        }
        self._max_attempts = max(1, max_attempts)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise StoreUnavailable("event store is closed")
        if self._started:
            return
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(self._url, **self._pool_options)
            except _DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {describe(exc)}") from exc
        try:
            await self._call("migrate", migrate_postgres)
        except BaseException:
            await self._release_pool()
            raise
        self._started = True

    async def close(self) -> None:
        self._closed = True
        await self._release_pool()

    async def _release_pool(self) -> None:
        if self._pool is not None and self._owns_pool:
            pool, self._pool = self._pool, None
            await pool.close()

    async def append(self, batch: Sequence[NewEvent]) -> list[Appended]:
        if not batch:
            return []
        return await self._call("append", lambda conn: self._append(conn, batch))

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
        rows = await self._fetch("read", _READ, channel, after, upper_bound(before), limit)
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
        rows = await self._fetch("read", _READ_LAST, channel, upper_bound(before), limit)
        return [_event(row) for row in reversed(rows)]

    async def bounds(self, channel: str) -> ChannelBounds:
        rows = await self._fetch("bounds", _BOUNDS, channel)
        return _bounds(rows[0]) if rows else ChannelBounds(0, 1)

    async def ensure(self, channel: str) -> ChannelBounds:
        for sql in (_BOUNDS, _ENSURE, _BOUNDS):  # the row is there for nearly every call
            rows = await self._fetch("ensure", sql, channel)
            if rows:
                return _bounds(rows[0])
        raise StoreUnavailable(f"channel {channel!r} vanished while being created")

    async def reset_epochs(
        self, *, channels: Sequence[str] | None = None, namespace: str | None = None
    ) -> int:
        names = check_epoch_selection(channels, namespace)
        status = await self._call("reset_epochs", lambda conn: conn.execute(_RESET_EPOCHS, names, namespace))
        return int(str(status).split()[-1])

    async def heads(self, channels: Sequence[str]) -> dict[str, int]:
        names = list(dict.fromkeys(channels))
        rows = await self._fetch("heads", _HEADS, names)
        found = {str(row[0]): int(row[1]) for row in rows}
        return {name: found.get(name, 0) for name in names}

    async def namespaces(self) -> list[str]:
        rows = await self._fetch("namespaces", _NAMESPACES)
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
        return await self._call(
            "prune", lambda conn: self._prune(conn, namespace, max_age_seconds, max_events)
        )

    async def ping(self) -> None:
        await self._call("ping", lambda conn: conn.fetchval("SELECT 1"))

    # -- transactions --------------------------------------------------------

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        rows = await self._call(what, lambda conn: conn.fetch(sql, *args))
        return list(rows)

    async def _call(self, what: str, op: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``op`` on a pooled connection, retrying conflicts, mapping driver errors."""
        if self._closed or self._pool is None:
            state = "closed" if self._closed else "not started"
            raise StoreUnavailable(f"event store is {state}")
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with self._pool.acquire() as conn:
                    return await op(conn)
            except _RETRYABLE as exc:
                if attempt == self._max_attempts:
                    raise StoreUnavailable(
                        f"{what} gave up after {attempt} conflicting attempts: {describe(exc)}"
                    ) from exc
                log.debug("%s conflicted (%s), retrying", what, describe(exc))
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            except _INPUT_ERRORS as exc:
                raise _refused(exc) from exc
            except _DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"event store {what} failed: {describe(exc)}") from exc
        raise AssertionError("unreachable")

    async def _append(self, conn: Connection, batch: Sequence[NewEvent]) -> list[Appended]:
        # no explicit transaction: the idempotency lookup cannot make the write
        # safe anyway (under READ COMMITTED a concurrent writer can store the same
        # key in between); the unique index does, and a conflict retries the whole
        # append, whose lookup then finds the winner's event
        plan = AppendPlan(batch, await self._stored(conn, batch))
        created: list[Event] = []
        if plan.fresh:
            created = await self._write(conn, plan)
        return plan.results(created)

    async def _stored(self, conn: Connection, batch: Sequence[NewEvent]) -> dict[Key, Event]:
        keys = idempotency_keys(batch)
        if not keys:
            return {}
        rows = await conn.fetch(_SELECT_STORED, [k[0] for k in keys], [k[1] for k in keys])
        events = [_event(row) for row in rows]
        return {(e.channel, e.client_msg_id): e for e in events if e.client_msg_id is not None}

    async def _write(self, conn: Connection, plan: AppendPlan) -> list[Event]:
        fresh = plan.fresh
        ids = [new_event_id() for _ in fresh]
        rows = await conn.fetch(
            _APPEND,
            list(plan.counts),
            list(plan.counts.values()),
            _rows(fresh, ids),
        )
        heads = {str(row[0]): int(row[1]) for row in rows}
        # one ts for the whole batch: the latest lock acquisition
        ts = _ms(max(row[2] for row in rows))
        return plan.events(heads, ts, iter(ids).__next__)

    async def _prune(
        self,
        conn: Connection,
        namespace: str,
        max_age: float | None,
        max_events: int | None,
    ) -> int:
        async with conn.transaction():
            targets = await conn.fetch(_PRUNE_TARGETS, namespace, max_events, max_age)
            if not targets:
                return 0
            names = [str(row[0]) for row in targets]
            keep = [int(row[1]) for row in targets]
            status = await conn.execute(_PRUNE_DELETE, names, keep)
            # lock heads in the appenders' order only now: publishers to these
            # channels wait for the short UPDATE, not for the DELETE above
            await conn.execute(_PRUNE_LOCK, names)
            await conn.execute(_PRUNE_MOVE_FIRST, names, keep)
        return int(str(status).split()[-1])


async def _keep_session(_conn: Connection) -> None:
    """The pool's reset on release, doing nothing more than asyncpg always does (roll
    back an open transaction). The default also clears session state (settings,
    LISTEN, cursors, advisory locks) with a query: a round trip on every release,
    which showed as a fifth of a small append's time. This store leaves no session
    state behind: its advisory lock is transaction-scoped."""


def _rows(items: Sequence[NewEvent], ids: Sequence[str]) -> str:
    """The events of an append as one JSON parameter. Seven text arrays, which asyncpg
    encodes element by element, cost a third more of the append's Python time."""
    try:
        return dumps([{"c": item.channel, "i": id, "t": item.type, "d": item.data, "u": item.sender,
                       "m": item.client_msg_id} for item, id in zip(items, ids, strict=True)]).decode()
    except TypeError as exc:  # orjson: integers beyond 64 bits, lone surrogates, non-JSON types
        raise AppError(ErrorCode.BAD_REQUEST, f"event data is not storable JSON: {exc}") from exc


def _bounds(row: Any) -> ChannelBounds:
    return ChannelBounds(int(row[0]), int(row[1]), str(row[2]))


def _event(row: Any) -> Event:
    return Event(
        id=str(row[0]),
        channel=str(row[1]),
        seq=int(row[2]),
        type=str(row[3]),
        data=loads(row[4]),
        sender=str(row[5]),
        client_msg_id=row[6],
        ts=_ms(row[7]),
    )


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _refused(exc: BaseException) -> AppError:
    return AppError(ErrorCode.BAD_REQUEST, f"event store refused the input: {exc}")
