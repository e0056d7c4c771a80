"""The EventStore contract (channels/ports.py), held against every adapter.

Each test runs against PostgreSQL (a fresh database) and SQLite (a temp file).
The GroupCommitWriter is tested here too, over both stores, because its
promises (order, flush on close, failure isolation) are promises of the
publish path as a whole.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from channels.errors import AppError, ErrorCode, StoreUnavailable
from channels.models import Appended, ChannelBounds, Event, JsonObject, NewEvent
from channels.ports import EventStore
from channels.store import GroupCommitWriter, open_store
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

CHANNEL = "chat:room-1"


def new(
    channel: str = CHANNEL, n: int = 0, *, cmid: str | None = None, data: JsonObject | None = None
) -> NewEvent:
    return NewEvent(
        channel=channel,
        type="message",
        data={"n": n} if data is None else data,
        sender="alice",
        client_msg_id=cmid,
    )


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    s = open_store(store_url)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def all_seqs(store: EventStore, channel: str = CHANNEL) -> list[int]:
    return [e.seq for e in await store.read(channel, limit=100_000)]


def assert_gapless(seqs: Sequence[int], n: int) -> None:
    assert sorted(seqs) == list(range(1, n + 1))


# -- ordering --------------------------------------------------------------


async def test_writer_gapless_under_8_concurrent_publishers(store: EventStore) -> None:
    writer = GroupCommitWriter(store, max_batch=16)
    await writer.start()

    async def publisher(p: int) -> list[int]:
        return [(await writer.submit(new(n=p * 100 + i))).event.seq for i in range(25)]

    per_publisher = await asyncio.gather(*(publisher(p) for p in range(8)))
    await writer.close()
    for seqs in per_publisher:
        assert seqs == sorted(seqs)  # each publisher's order is kept
    assert_gapless([s for seqs in per_publisher for s in seqs], 200)
    assert await all_seqs(store) == list(range(1, 201))


async def test_raw_concurrent_appends_are_gapless(store: EventStore) -> None:
    async def publisher(p: int) -> list[int]:
        seqs: list[int] = []
        for i in range(5):
            results = await store.append([new(n=p * 100 + i * 10 + j) for j in range(5)])
            seqs += [r.event.seq for r in results]
            assert seqs[-5:] == list(range(seqs[-5], seqs[-5] + 5))  # contiguous in batch order
        return seqs

    per_publisher = await asyncio.gather(*(publisher(p) for p in range(8)))
    assert_gapless([s for seqs in per_publisher for s in seqs], 200)
    assert await all_seqs(store) == list(range(1, 201))


async def test_two_store_instances_append_gapless(store: EventStore, store_url: str) -> None:
    """Two pools / connections stand for two processes sharing one database."""
    other = open_store(store_url)
    await other.start()
    try:
        async def publisher(s: EventStore, p: int) -> list[int]:
            seqs: list[int] = []
            for i in range(10):
                batch = [new(n=i), new("chat:other", i), new(n=i, cmid=f"p{p}-{i}")]
                seqs += [r.event.seq for r in await s.append(batch) if r.event.channel == CHANNEL]
            return seqs

        tasks = [publisher(s, p * 2 + k) for p in range(4) for k, s in enumerate((store, other))]
        per_publisher = await asyncio.gather(*tasks)
    finally:
        await other.close()
    assert_gapless([s for seqs in per_publisher for s in seqs], 8 * 20)
    assert await all_seqs(store) == list(range(1, 161))
    assert await store.heads(["chat:other"]) == {"chat:other": 80}


async def test_mixed_channels_in_one_batch_are_independent(store: EventStore) -> None:
    batch = [new("a:1", 1), new("b:1", 1), new("a:1", 2), new("c:1"), new("b:1", 2)]
    results = await store.append(batch)
    assert [(r.event.channel, r.event.seq) for r in results] == [
        ("a:1", 1), ("b:1", 1), ("a:1", 2), ("c:1", 1), ("b:1", 2),
    ]
    assert [r.event.data["n"] for r in results if r.event.channel == "a:1"] == [1, 2]
    again = await store.append([new("b:1"), new("a:1")])
    assert [(r.event.channel, r.event.seq) for r in again] == [("b:1", 3), ("a:1", 3)]
    assert await store.heads(["a:1", "b:1", "c:1"]) == {"a:1": 3, "b:1": 3, "c:1": 1}


async def test_batch_shares_one_ts_and_gets_fresh_ids(store: EventStore) -> None:
    before = time.time() * 1000
    results = await store.append([new(n=i) for i in range(3)])
    after = time.time() * 1000
    assert len({r.event.ts for r in results}) == 1
    assert before - 1000 <= results[0].event.ts <= after + 1000
    ids = [r.event.id for r in results]
    assert len(set(ids)) == 3 and all(uuid.UUID(i).version == 4 for i in ids)
    assert [e.id for e in await store.read(CHANNEL, limit=10)] == ids
    assert await store.append([]) == []


async def test_crossing_multi_channel_batches_neither_deadlock_nor_gap(
    store: EventStore, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches naming the same channels in opposite orders, from two stores."""
    caplog.set_level("DEBUG", logger="channels.store")
    other = open_store(store_url)
    await other.start()
    names = [f"chat:{c}" for c in "abcd"]
    try:
        batches = [
            s.append([new(ch) for ch in (names if k % 2 else names[::-1])])
            for k in range(12)
            for s in (store, other)
        ]
        await asyncio.gather(*batches)
    finally:
        await other.close()
    assert await store.heads(names) == {ch: 24 for ch in names}
    for ch in names:
        assert await all_seqs(store, ch) == list(range(1, 25))
    assert "Deadlock" not in caplog.text


async def test_prune_while_appending_keeps_a_contiguous_tail(
    store: EventStore, store_url: str
) -> None:
    other = open_store(store_url)
    await other.start()

    async def publish() -> None:
        for i in range(15):
            await other.append([new(n=i), new("chat:side", i), new(n=i)])

    async def prune() -> None:
        for _ in range(15):
            await store.prune("chat", max_events=4)
            await asyncio.sleep(0)

    try:
        await asyncio.gather(publish(), prune())
    finally:
        await other.close()
    b = await store.bounds(CHANNEL)
    assert b.head == 30
    assert await all_seqs(store) == list(range(b.first, 31))


# -- idempotency -------------------------------------------------------------


async def test_same_client_msg_id_returns_the_original(store: EventStore) -> None:
    [first] = await store.append([new(n=1, cmid="m-1")])
    await store.append([new(n=2)])
    [retry] = await store.append([new(n=99, cmid="m-1")])
    assert first.duplicate is False
    assert retry == Appended(first.event, duplicate=True)
    assert await all_seqs(store) == [1, 2]
    assert (await store.bounds(CHANNEL)).head == 2


async def test_repeat_within_one_batch_maps_to_first_occurrence(store: EventStore) -> None:
    batch = [new(n=1, cmid="k"), new(n=2), new(n=3, cmid="k"), new(n=4, cmid="j")]
    results = await store.append(batch)
    assert [r.duplicate for r in results] == [False, False, True, False]
    assert results[2].event == results[0].event
    assert [r.event.seq for r in results] == [1, 2, 1, 3]
    # a batch made only of duplicates stores nothing and moves no head
    dupes = await store.append([new(cmid="j"), new(cmid="k"), new(cmid="j")])
    assert [r.event.seq for r in dupes] == [3, 1, 3] and all(r.duplicate for r in dupes)
    assert await all_seqs(store) == [1, 2, 3]


async def test_same_client_msg_id_in_other_channel_is_another_event(store: EventStore) -> None:
    a, b = await store.append([new("chat:a", cmid="same"), new("chat:b", cmid="same")])
    assert not a.duplicate and not b.duplicate
    assert a.event.id != b.event.id
    [c] = await store.append([new("chat:c", cmid="same")])
    assert not c.duplicate and c.event.seq == 1


async def test_concurrent_retries_with_one_client_msg_id_store_once(
    store: EventStore, store_url: str
) -> None:
    other = open_store(store_url)
    await other.start()
    try:
        batches = [
            s.append([new(n=i), new(cmid="retry")]) for i in range(6) for s in (store, other)
        ]
        results = await asyncio.gather(*batches)
    finally:
        await other.close()
    originals = {r[1].event.id for r in results}
    assert len(originals) == 1
    assert sum(not r[1].duplicate for r in results) == 1
    assert_gapless(await all_seqs(store), 13)


# -- reading -----------------------------------------------------------------


async def test_read_pages_and_read_last(store: EventStore) -> None:
    await store.append([new(n=i) for i in range(1, 11)])

    def seqs(events: list[Event]) -> list[int]:
        return [e.seq for e in events]

    assert seqs(await store.read(CHANNEL, limit=3)) == [1, 2, 3]
    assert seqs(await store.read(CHANNEL, after=3, limit=3)) == [4, 5, 6]
    assert seqs(await store.read(CHANNEL, after=8, limit=5)) == [9, 10]
    assert seqs(await store.read(CHANNEL, after=2, before=6, limit=10)) == [3, 4, 5]
    assert seqs(await store.read(CHANNEL, after=10, limit=5)) == []
    assert seqs(await store.read(CHANNEL, limit=0)) == []
    assert seqs(await store.read_last(CHANNEL, limit=3)) == [8, 9, 10]
    assert seqs(await store.read_last(CHANNEL, before=5, limit=3)) == [2, 3, 4]
    assert seqs(await store.read_last(CHANNEL, before=3, limit=10)) == [1, 2]
    assert await store.read("chat:unknown", limit=10) == []
    assert await store.read_last("chat:unknown", limit=10) == []


async def test_bounds_and_heads(store: EventStore) -> None:
    assert (await store.bounds("chat:unknown")).head == 0
    assert (await store.bounds("chat:unknown")).first == 1
    assert await store.heads([]) == {}
    await store.append([new("chat:x"), new("chat:x"), new("chat:y")])
    b = await store.bounds("chat:x")
    assert (b.head, b.first) == (2, 1) and b.can_recover(0)
    heads = await store.heads(["chat:x", "chat:y", "chat:z"])
    assert heads == {"chat:x": 2, "chat:y": 1, "chat:z": 0}


async def test_data_round_trip(store: EventStore) -> None:
    data = {
        "text": "héllo wörld ✓ 你好 😀",
        "nested": {"list": [1, 2.5, -3, None, True, False, {"deep": ["x"]}], "empty": {}},
        "big": 2**63 - 1,
        "small": -(2**63),
        "beyond_double": 2**53 + 1,
        "float": 0.1,
        "quote\"back\\slash": "line\nbreak\ttab",
        "literal_escape": "\\u0000 is just text here",
        "ключ": "значение",
    }
    new_event = NewEvent(CHANNEL, "type/é", data, "sender ✓", client_msg_id="id-é")
    [stored] = await store.append([new_event])
    [read] = await store.read(CHANNEL, limit=1)
    assert read == stored.event
    assert read.data == data and isinstance(read.data["big"], int)
    assert (read.type, read.sender, read.client_msg_id) == ("type/é", "sender ✓", "id-é")


# -- epochs --------------------------------------------------------------------


async def sql(url: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on the store's database directly (an operator at the console)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(statement.replace("$1", "?"), args))
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


async def test_a_history_gets_an_epoch_that_lasts_as_long_as_it_does(store: EventStore, store_url: str) -> None:
    assert (await store.bounds(CHANNEL)).epoch == ""  # no history, no epoch
    await store.append([new(n=1)])
    epoch = (await store.bounds(CHANNEL)).epoch
    assert 8 <= len(epoch) <= 64 and epoch.isalnum()
    await store.append([new(n=2), new("chat:other")])
    assert (await store.bounds(CHANNEL)).epoch == epoch
    assert (await store.bounds("chat:other")).epoch not in ("", epoch)  # each history its own
    await store.prune("chat", max_events=0)  # pruned to nothing: the history continues
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first, b.epoch) == (2, 3, epoch)
    await store.append([new(n=3)])
    other = open_store(store_url)  # another process sees the same epoch
    await other.start()
    try:
        assert await other.bounds(CHANNEL) == ChannelBounds(3, 3, epoch)
    finally:
        await other.close()


async def test_ensure_starts_a_history_once_and_appends_continue_it(store: EventStore, store_url: str) -> None:
    other = open_store(store_url)
    await other.start()
    try:
        answers = await asyncio.gather(*(s.ensure("chat:new") for _ in range(4) for s in (store, other)))
    finally:
        await other.close()
    epoch = answers[0].epoch
    assert epoch and all(a == ChannelBounds(0, 1, epoch) for a in answers)  # concurrent callers agree
    assert await store.bounds("chat:new") == ChannelBounds(0, 1, epoch)
    [first] = await store.append([new("chat:new")])
    assert first.event.seq == 1
    assert await store.ensure("chat:new") == ChannelBounds(1, 1, epoch)
    assert (await store.ensure(CHANNEL)).epoch not in ("", epoch)


async def test_a_channel_row_created_again_starts_a_new_epoch(store: EventStore, store_url: str) -> None:
    """An operator deletes a channel by hand (or a restore lacks it): its new history
    starts again at seq 1 and must not pass for the old one."""
    await store.append([new(n=i) for i in range(5)])
    old = await store.bounds(CHANNEL)
    await sql(store_url, "DELETE FROM events WHERE channel = $1", CHANNEL)
    await sql(store_url, "DELETE FROM channels WHERE name = $1", CHANNEL)
    await store.append([new(n=i) for i in range(7)])
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first) == (7, 1) and b.epoch not in ("", old.epoch)
    assert b.can_recover(3) and b.can_recover(3, b.epoch) and b.can_recover(0, old.epoch)
    assert not b.can_recover(3, old.epoch) and not b.can_recover(3, "")


async def test_reset_epochs_by_channel_namespace_or_all(store: EventStore) -> None:
    names = ["chat:a", "chat:b", "user:c"]
    await store.append([new(name, n) for name in names for n in range(3)])

    async def epochs() -> dict[str, str]:
        return {name: (await store.bounds(name)).epoch for name in names}

    before = await epochs()
    assert await store.reset_epochs(channels=["chat:a", "chat:unknown", "chat:a"]) == 1
    after = await epochs()
    assert after["chat:a"] not in ("", before["chat:a"]) and {**after, "chat:a": ""} == {**before, "chat:a": ""}
    assert await store.reset_epochs(namespace="chat") == 2
    again = await epochs()
    assert again["chat:a"] != after["chat:a"] and again["chat:b"] != after["chat:b"]
    assert again["user:c"] == before["user:c"]
    assert await store.reset_epochs() == 3
    final = await epochs()
    assert all(final[n] != again[n] for n in names) and len(set(final.values())) == 3
    assert await store.reset_epochs(channels=[]) == 0
    with pytest.raises(ValueError, match="not both"):
        await store.reset_epochs(channels=["chat:a"], namespace="chat")
    # seqs, heads and events are untouched: only positions from before are refused
    assert await store.heads(names) == {name: 3 for name in names}
    assert await all_seqs(store, "chat:a") == [1, 2, 3]
    assert [r.event.seq for r in await store.append([new("chat:a")])] == [4]
    assert (await store.bounds("chat:a")).epoch == final["chat:a"]


async def test_migration_gives_existing_channels_each_an_epoch(store_url: str) -> None:
    """A deployment from before epochs: schema 0001 with channels and events in it."""
    from channels.store.migrate import BOOTSTRAP, load_migrations, split_statements

    dialect = "sqlite" if store_url.startswith("sqlite") else "postgres"
    init = load_migrations(dialect)[0]
    assert init.version == 1
    statements = [BOOTSTRAP[dialect], *split_statements(init.sql),
                  "INSERT INTO schema_migrations (version, name) VALUES (1, 'init')"]
    now = "0" if dialect == "sqlite" else "now()"
    for name, head in (("chat:a", 5), ("chat:b", 2), ("user:x", 0)):
        statements.append(f"INSERT INTO channels (name, last_seq, first_seq, created_at) "
                          f"VALUES ('{name}', {head}, 2, {now})")
    if dialect == "sqlite":
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        conn = await asyncpg.connect(store_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
    s = open_store(store_url)
    await s.start()
    try:
        bounds = {name: await s.bounds(name) for name in ("chat:a", "chat:b", "user:x")}
        assert {n: (b.head, b.first) for n, b in bounds.items()} == {"chat:a": (5, 2), "chat:b": (2, 2), "user:x": (0, 2)}
        assert all(b.epoch for b in bounds.values()) and len({b.epoch for b in bounds.values()}) == 3
        [appended] = await s.append([new("chat:a")])
        assert appended.event.seq == 6 and (await s.bounds("chat:a")).epoch == bounds["chat:a"].epoch
    finally:
        await s.close()
    assert await migration_versions(store_url) == [1, 2]


# -- retention ---------------------------------------------------------------


async def test_prune_by_count_keeps_heads(store: EventStore) -> None:
    await store.append([new(n=i) for i in range(10)] + [new("chat:b")] * 2 + [new("chatter:1")] * 3)
    assert await store.prune("chat", max_events=3) == 7
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first) == (10, 8)
    assert b.can_recover(7) and b.can_recover(10) and not b.can_recover(6)
    assert await all_seqs(store) == [8, 9, 10]
    assert await all_seqs(store, "chat:b") == [1, 2]
    assert await all_seqs(store, "chatter:1") == [1, 2, 3]  # another namespace
    assert await store.prune("chat", max_events=3) == 0
    [next_one] = await store.append([new()])
    assert next_one.event.seq == 11
    assert await store.prune("chat", max_events=0) == 6
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first) == (11, 12) and b.can_recover(11) and not b.can_recover(10)
    assert await store.heads([CHANNEL, "chat:b"]) == {CHANNEL: 11, "chat:b": 2}


async def test_prune_namespace_is_literal(store: EventStore) -> None:
    """``_`` must not act as a LIKE wildcard, nor a prefix match another namespace."""
    await store.append([new("a_b:1"), new("axb:1"), new("a_bc:1"), new("a_b:1")])
    assert await store.prune("a_b", max_events=0) == 2
    assert await store.heads(["a_b:1", "axb:1", "a_bc:1"]) == {"a_b:1": 2, "axb:1": 1, "a_bc:1": 1}
    assert await all_seqs(store, "axb:1") == [1] and await all_seqs(store, "a_bc:1") == [1]


AGE_GAP = 1.0  # seconds between an old and a young batch: a prune call has half of it to run


async def old_and_young(store: EventStore, old: list[NewEvent], young: list[NewEvent]) -> tuple[float, int]:
    """Append ``old``, then ``young`` once ``AGE_GAP`` has passed; a ``max_age_seconds``
    whose cut-off lies halfway between the two batches now, and the young batch's ts."""
    *_, last_old = await store.append(old)
    # Waiting for the clock is the behaviour under test (events age); a slow machine
    # only widens the gap. The cut-off is taken from the commit times themselves, so
    # slow appends cannot blur the two ages.
    await eventually(lambda: time.time() * 1000 >= last_old.event.ts + AGE_GAP * 1000, what="the old batch to age")
    first_young, *_ = await store.append(young)
    halfway = (last_old.event.ts + first_young.event.ts) / 2000
    return time.time() - halfway, first_young.event.ts


async def test_prune_by_age(store: EventStore) -> None:
    max_age, young_ts = await old_and_young(store, [new(n=i) for i in range(3)], [new(n=i) for i in range(3, 5)])
    assert await store.prune("chat", max_age_seconds=max_age) == 3
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first) == (5, 4) and not b.can_recover(2) and b.can_recover(3)
    assert await all_seqs(store) == [4, 5]
    # "older than 0 s" needs the clock past the young batch's millisecond
    await eventually(lambda: time.time() * 1000 > young_ts + 1, what="the young batch to age")
    assert await store.prune("chat", max_age_seconds=0) == 2
    b = await store.bounds(CHANNEL)
    assert (b.head, b.first) == (5, 6) and b.can_recover(5) and not b.can_recover(4)
    assert await store.prune("chat", max_age_seconds=0, max_events=0) == 0
    assert await store.prune("chat") == 0


async def test_prune_by_age_and_count_together(store: EventStore) -> None:
    max_age, _ = await old_and_young(store, [new(n=i) for i in range(4)], [new(n=i) for i in range(4, 10)])
    assert await store.prune("chat", max_age_seconds=max_age, max_events=2) == 8
    assert await all_seqs(store) == [9, 10]


# -- lifecycle and failures ----------------------------------------------------


async def test_migrations_are_idempotent_and_race_free(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        await stores[0].start()
        await asyncio.gather(*(s.append([new()]) for s in stores))
        assert_gapless(await all_seqs(stores[1]), 3)
    finally:
        for s in stores:
            await s.close()
    again = open_store(store_url)
    await again.start()
    assert await again.heads([CHANNEL]) == {CHANNEL: 3}
    await again.close()
    assert await migration_versions(store_url) == [1, 2]


async def migration_versions(url: str) -> list[int]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


async def test_closed_store_is_unavailable(store_url: str) -> None:
    s = open_store(store_url)
    await s.start()
    await s.ping()
    await s.close()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.ping()
    with pytest.raises(StoreUnavailable):
        await s.append([new()])


async def test_unreachable_postgres_is_store_unavailable() -> None:
    s = open_store("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=2)
    with pytest.raises(StoreUnavailable) as info:
        await s.start()
    assert info.value.code is ErrorCode.UNAVAILABLE and info.value.temporary
    await s.close()


def test_open_store_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="'mysql'"):
        open_store("mysql://localhost/db")
    with pytest.raises(ValueError, match="SQLite URL"):
        open_store("sqlite://relative.db")


async def test_sqlite_memory_url() -> None:
    s = open_store("sqlite:///:memory:")
    await s.start()
    assert [r.event.seq for r in await s.append([new(), new()])] == [1, 2]
    await s.close()


# -- group-commit writer --------------------------------------------------------


class FlakyStore:
    """Delegates to a real store, but fails the next ``append`` with ``error``
    (after waiting for ``gate``, when one is set)."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.batches: list[int] = []

    async def append(self, batch: Sequence[NewEvent]) -> list[Appended]:
        self.batches.append(len(batch))
        error, self.error = self.error, None
        if error is not None:
            if self.gate is not None:
                await self.gate.wait()
            raise error
        return await self.inner.append(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_writer_close_flushes_pending(store: EventStore) -> None:
    writer = GroupCommitWriter(store, max_batch=8)
    await writer.start()
    tasks = [asyncio.create_task(writer.submit(new(n=i))) for i in range(50)]
    await asyncio.sleep(0)  # let every submit queue its item
    await writer.close()
    assert all(t.done() for t in tasks)
    assert [t.result().event.seq for t in tasks] == list(range(1, 51))
    with pytest.raises(AppError) as info:
        await writer.submit(new())
    assert info.value.code is ErrorCode.UNAVAILABLE
    await writer.close()


async def test_writer_on_commit_sees_events_in_order_before_ack(store: EventStore) -> None:
    seen: list[Event] = []
    acked: set[int] = set()

    def on_commit(events: Sequence[Event]) -> None:
        assert not acked & {e.seq for e in events}
        seen.extend(events)

    writer = GroupCommitWriter(store, max_batch=4, on_commit=on_commit)
    await writer.start()

    async def publish(i: int, cmid: str | None) -> None:
        acked.add((await writer.submit(new(n=i, cmid=cmid))).event.seq)

    await asyncio.gather(*(publish(i, f"c{i % 10}") for i in range(20)))
    await writer.close()
    assert [e.seq for e in seen] == list(range(1, 11))  # duplicates are not re-announced
    assert acked == set(range(1, 11))


async def test_writer_failed_batch_fails_only_itself(store: EventStore) -> None:
    flaky = FlakyStore(store)
    writer = GroupCommitWriter(flaky)  # type: ignore[arg-type]
    await writer.start()
    flaky.error, flaky.gate = StoreUnavailable("database went away"), asyncio.Event()
    failing = [asyncio.create_task(writer.submit(new(n=i))) for i in range(3)]
    await eventually(lambda: flaky.batches == [3], what="the failing batch in flight")
    later = [asyncio.create_task(writer.submit(new(n=i))) for i in range(3, 5)]
    await asyncio.sleep(0)
    flaky.gate.set()
    first = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in first)
    assert [(await t).event.seq for t in later] == [1, 2]
    assert flaky.batches[:2] == [3, 2]

    flaky.error = RuntimeError("bug")
    with pytest.raises(AppError) as info:
        await writer.submit(new(n=4))
    assert info.value.code is ErrorCode.INTERNAL
    assert (await writer.submit(new(n=5))).event.seq == 3
    await writer.close()
    assert await all_seqs(store) == [1, 2, 3]


async def test_writer_cancelled_submit_spares_others(store: EventStore) -> None:
    writer = GroupCommitWriter(store)
    tasks = [asyncio.create_task(writer.submit(new(n=i))) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await writer.start()
    await asyncio.gather(tasks[0], tasks[2])
    assert tasks[1].cancelled()
    assert [tasks[0].result().event.seq, tasks[2].result().event.seq] == [1, 2]
    await writer.close()


async def test_writer_bounded_queue_and_bad_input(store: EventStore) -> None:
    writer = GroupCommitWriter(store, max_pending=2)
    tasks = [asyncio.create_task(writer.submit(new(n=i))) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(AppError, match="publish queue full") as info:
        await writer.submit(new())
    assert info.value.code is ErrorCode.UNAVAILABLE and info.value.temporary
    await writer.start()
    await asyncio.gather(*tasks)
    bad_items = [
        new(data={"x": "nul\x00"}),
        new(data={"big": 2**70}),
        new(cmid="\x00"),
        new(data={"s": "\ud800"}),
    ]
    for bad in bad_items:
        with pytest.raises(AppError) as info:
            await writer.submit(bad)
        assert info.value.code is ErrorCode.BAD_REQUEST
    assert (await writer.submit(new(data={"ok": "\\u0000"}))).event.seq == 3
    await writer.close()


async def test_writer_batches_under_load(store: EventStore) -> None:
    flaky = FlakyStore(store)
    writer = GroupCommitWriter(flaky, max_batch=64)  # type: ignore[arg-type]
    await writer.start()
    await asyncio.gather(*(writer.submit(new(n=i)) for i in range(200)))
    await writer.close()
    assert max(flaky.batches) == 64 and len(flaky.batches) < 10
    assert await all_seqs(store) == list(range(1, 201))


async def test_unstorable_input_is_bad_request_and_commits_nothing(store: EventStore) -> None:
    bad_items = [
        new(data={"big": 2**70}),
        new(data={"s": "lone \ud800"}),
        NewEvent(CHANNEL, "type \ud800", {}, "alice"),
    ]
    for bad in bad_items:
        with pytest.raises(AppError) as info:
            await store.append([new(), bad])
        assert info.value.code is ErrorCode.BAD_REQUEST
    assert (await store.bounds(CHANNEL)).head == 0
    assert [r.event.seq for r in await store.append([new()])] == [1]


async def test_namespaces_lists_each_namespace_once(store: EventStore) -> None:
    assert await store.namespaces() == []
    await store.append([new("chat:1"), new("chat:2"), new("user:bob"), new("a_b:x:y")])
    assert await store.namespaces() == ["a_b", "chat", "user"]


async def test_writer_flush_waits_for_everything_submitted(store: EventStore) -> None:
    writer = GroupCommitWriter(store, max_batch=4)
    await writer.start()
    try:
        submits = [asyncio.create_task(writer.submit(new(n=i))) for i in range(20)]
        await asyncio.sleep(0)  # the tasks enqueue
        await asyncio.wait_for(writer.flush(), 10)
        assert all(t.done() for t in submits)
        assert await all_seqs(store) == list(range(1, 21))
        await asyncio.wait_for(writer.flush(), 1)  # idle: returns at once
    finally:
        await writer.close()


# -- PostgreSQL: round trips -------------------------------------------------


@pytest.mark.postgres
async def test_a_postgres_append_is_one_round_trip_and_its_connection_goes_back_clean(postgres_url: str) -> None:
    # each round trip waits for a busy event loop in the server: an append must be one
    # statement, and releasing its connection must not send a reset query
    from channels.store.postgres import PostgresEventStore

    store = PostgresEventStore(postgres_url, min_size=1, max_size=1)
    await store.start()
    try:
        pool: Any = store._pool  # noqa: SLF001
        await store.append([new(n=100)])  # the first one also prepares the statement
        async with pool.acquire() as conn:
            protocol = conn._con._protocol  # noqa: SLF001
        before = protocol.queries_count
        for n in range(10):
            await store.append([new(n=n)])
        assert protocol.queries_count - before == 10
        async with pool.acquire() as conn:  # what a failed transaction leaves is rolled back
            with pytest.raises(asyncpg.DivisionByZeroError):
                async with conn.transaction():
                    await conn.execute("SELECT 1/0")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM events") == 11
    finally:
        await store.close()
