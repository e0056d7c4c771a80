"""The ``Presence`` contract, held against every adapter.

Two adapters on one backend (same Redis and prefix, or one ``MemoryPresenceHub``)
stand for two instances. A killed instance is one that ``abandon()``s: it stops
heartbeating without removing anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.errors import PresenceUnavailable
from channels.models import PresenceChange, PresenceMember, PresenceStats
from channels.presence import MemoryPresence, MemoryPresenceHub, open_presence
from channels.presence.base import PresenceBase
from channels.presence.redis import RedisPresence

CH = "chat:1"
SHORT = 0.6  # presence timeout of the expiry tests: a dead instance is gone within this
SLOW = 0.3  # presence timeout of the busy-instance tests: shorter than the work they do


@dataclass
class Changes:
    seen: list[PresenceChange] = field(default_factory=list)

    def on_changes(self, changes: Sequence[PresenceChange]) -> None:
        self.seen.extend(changes)


@dataclass
class Node:
    presence: PresenceBase
    changes: Changes


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    return str(request.param)


@pytest.fixture
async def make_node(backend: str, key_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeNode]:
    hub = MemoryPresenceHub()
    nodes: list[Node] = []
    clients: list[Redis] = []

    async def make(*, timeout: float = 60.0) -> Node:
        if backend == "redis":
            client = RedisPresence.client_for(request.getfixturevalue("redis_url"))
            clients.append(client)
            presence: PresenceBase = RedisPresence(client, prefix=key_prefix, timeout=timeout)
        else:
            presence = MemoryPresence(hub, timeout=timeout)
        node = Node(presence, Changes())
        await presence.start(node.changes)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.presence.close()
    if backend == "redis":
        admin = clients[0] if clients else Redis.from_url(request.getfixturevalue("redis_url"))
        keys = [k async for k in admin.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await admin.delete(*keys)
        for client in clients:
            await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_user_with_three_connections_is_listed_once(make_node: MakeNode) -> None:
    p = (await make_node()).presence
    firsts = [await p.join(CH, f"c{i}", "alice", {"name": "Alice"}) for i in range(3)]
    assert firsts == [True, False, False]
    assert await p.join(CH, "c9", "bob", {}) is True
    assert await p.members(CH) == [PresenceMember("alice", 3, {"name": "Alice"}), PresenceMember("bob", 1, {})]
    assert await p.stats(CH) == PresenceStats(connections=4, users=2)
    assert [await p.leave(CH, f"c{i}", "alice") for i in range(3)] == [False, False, True]
    assert await p.members(CH) == [PresenceMember("bob", 1, {})]
    assert await p.members("chat:empty") == [] and await p.stats("chat:empty") == PresenceStats(0, 0)


async def test_join_and_leave_are_idempotent(make_node: MakeNode) -> None:
    p = (await make_node()).presence
    assert await p.leave(CH, "never", "alice") is False
    assert await p.join(CH, "c1", "alice", {}) is True
    assert await p.join(CH, "c1", "alice", {}) is False
    assert await p.stats(CH) == PresenceStats(1, 1)
    assert await p.leave(CH, "c1", "alice") is True
    assert await p.leave(CH, "c1", "alice") is False


async def test_first_and_last_are_exact_across_instances(make_node: MakeNode) -> None:
    a, b = (await make_node()).presence, (await make_node()).presence
    assert await a.join(CH, "a1", "alice", {}) is True
    assert await b.join(CH, "b1", "alice", {}) is False
    assert await b.members(CH) == [PresenceMember("alice", 2, {})]
    assert await a.leave(CH, "a1", "alice") is False
    assert await b.leave(CH, "b1", "alice") is True
    assert await a.members(CH) == []


async def test_concurrent_joins_have_exactly_one_first(make_node: MakeNode) -> None:
    a, b = (await make_node()).presence, (await make_node()).presence
    results = await asyncio.gather(*(node.join(CH, f"{n}{i}", "alice", {}) for i in range(20) for n, node in
                                     (("a", a), ("b", b))))
    assert results.count(True) == 1
    lasts = await asyncio.gather(*(node.leave(CH, f"{n}{i}", "alice") for i in range(20) for n, node in
                                   (("a", a), ("b", b))))
    assert lasts.count(True) == 1


async def test_a_leave_racing_its_join_leaves_nothing_behind(make_node: MakeNode) -> None:
    node = await make_node()
    p = node.presence
    # asked back to back, before either reaches the backend: applied in that order
    firsts = await asyncio.gather(p.join(CH, "c1", "alice", {}), p.leave(CH, "c1", "alice"))
    await asyncio.gather(p.connect("c1", "alice", limit=1), p.disconnect("c1", "alice"))
    assert await p.members(CH) == [] and await p.stats(CH) == PresenceStats(0, 0)
    assert firsts == [True, True]  # came and went: a join and its leave, in that order
    assert await p.connect("c2", "alice", limit=1)  # no phantom connection holds the limit


async def test_connection_limit_holds_across_instances(make_node: MakeNode) -> None:
    a, b = (await make_node()).presence, (await make_node()).presence
    assert await a.connect("a1", "alice", limit=2)
    assert await b.connect("b1", "alice", limit=2)
    assert await a.connect("a1", "alice", limit=2)  # the same connection again: still counted once
    assert not await a.connect("a2", "alice", limit=2)
    assert await b.connect("b2", "bob", limit=2)
    await b.disconnect("b1", "alice")
    await b.disconnect("b1", "alice")  # no double decrement
    assert await a.connect("a2", "alice", limit=2)
    assert not await b.connect("b3", "alice", limit=2)
    assert await b.connect("b3", "alice", limit=0)  # 0: no limit


async def test_a_killed_instance_is_reaped_within_the_timeout(make_node: MakeNode) -> None:
    dead = await make_node(timeout=SHORT)
    alive = await make_node(timeout=SHORT)
    await dead.presence.join(CH, "d1", "alice", {})
    await dead.presence.join(CH, "d2", "alice", {})
    await dead.presence.join("chat:2", "d1", "alice", {})
    await alive.presence.join(CH, "l1", "bob", {})
    assert await dead.presence.connect("d1", "alice", limit=1)
    await dead.presence.abandon()
    started = asyncio.get_running_loop().time()
    await eventually(lambda: _has(alive.changes, 2), SHORT + 0.5, "leave changes from the reaper")
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed <= SHORT + 0.1, elapsed
    assert sorted((c.channel, c.user, c.action) for c in alive.changes.seen) == [
        (CH, "alice", "leave"), ("chat:2", "alice", "leave")]
    assert await alive.presence.members(CH) == [PresenceMember("bob", 1, {})]
    assert await alive.presence.connect("l2", "alice", limit=1)  # the dead connection no longer counts


async def _has(changes: Changes, n: int) -> bool:
    return len(changes.seen) >= n


async def test_an_instance_declared_dead_comes_back_with_its_members(make_node: MakeNode) -> None:
    stalled = await make_node(timeout=SHORT)
    other = await make_node(timeout=SHORT)
    await stalled.presence.join(CH, "s1", "alice", {"v": 1})
    await stalled.presence.connect("s1", "alice")
    await stalled.presence.abandon()  # a stalled event loop: no heartbeat
    await eventually(lambda: _has(other.changes, 1), SHORT + 0.5, "the stalled instance's leave")
    assert await other.presence.members(CH) == []
    await stalled.presence.heartbeat()  # the loop runs again: it finds itself dead
    assert [(c.user, c.action) for c in stalled.changes.seen] == [("alice", "join")]
    assert await other.presence.members(CH) == [PresenceMember("alice", 1, {"v": 1})]
    assert not await other.presence.connect("o1", "alice", limit=1)  # its connection counts again
    assert await stalled.presence.leave(CH, "s1", "alice") is True


async def test_a_change_that_failed_is_applied_at_the_next_heartbeat(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await make_node()
    calls = 0

    async def unreachable(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionError("backend unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(node.presence, "_b_apply", unreachable)
        with pytest.raises(PresenceUnavailable):
            await node.presence.join(CH, "c1", "alice", {})
        with pytest.raises(PresenceUnavailable):
            await node.presence.join(CH, "c2", "bob", {})
    await node.presence.join(CH, "c3", "carol", {})  # works again, but alice and bob are missing
    assert [m.user for m in await node.presence.members(CH)] == ["carol"]
    await node.presence.heartbeat()
    assert [m.user for m in await node.presence.members(CH)] == ["alice", "bob", "carol"]
    assert sorted((c.user, c.action) for c in node.changes.seen) == [("alice", "join"), ("bob", "join")]
    assert calls == 2


async def test_close_removes_the_instance_and_reports_who_left(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await a.presence.join(CH, "a1", "alice", {})
    await b.presence.join(CH, "b1", "bob", {})
    await a.presence.close()
    assert [(c.user, c.action) for c in a.changes.seen] == [("alice", "leave")]
    assert await b.presence.members(CH) == [PresenceMember("bob", 1, {})]


class LoopLag:
    """The longest the event loop went without running a task while entered. An instance
    whose process stalled longer than its ttl less a heartbeat period could not heartbeat,
    so it may rightly be declared dead (a loaded test machine does this now and then); one
    whose loop never stalled that long must not be, however much work it has queued."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            self.worst, last = max(self.worst, now - last), now

    def could_heartbeat(self, p: PresenceBase) -> bool:
        return self.worst < p.ttl - 1.1 * p.interval


async def _all_reaped(node: Node) -> bool:
    empty = all([await node.presence.stats(f"chat:{i}") == PresenceStats(0, 0) for i in range(7)])
    return empty and await node.presence._b_expired() == []


async def test_reaping_a_large_instance_takes_batches_and_loses_nothing(make_node: MakeNode) -> None:
    async with LoopLag() as lag:
        dead, alive = await make_node(timeout=SLOW), await make_node(timeout=SLOW)
        identity = dead.presence.identity
        firsts = await asyncio.gather(*(dead.presence.join(f"chat:{i % 7}", f"c{i}", f"u{i}", {})
                                        for i in range(1300)))
    if lag.could_heartbeat(dead.presence):  # busy, not stalled: never declared dead while joining
        assert dead.presence.identity == identity and dead.changes.seen == [], f"loop lag {lag.worst:.3f}s"
    await dead.presence.abandon()
    await eventually(lambda: _all_reaped(alive), 6 * SLOW, "the dead instance reaped")
    await alive.presence.heartbeat()  # waits for a reaping pass in progress: every leave is in
    announced = dead.changes.seen + alive.changes.seen
    joins = [f"u{i}" for i, first in enumerate(firsts) if first] + [c.user for c in announced if c.action == "join"]
    leaves = [c.user for c in announced if c.action == "leave"]
    # one leave per membership that began: one each, or two if it stalled and re-registered
    assert sorted(leaves) == sorted(joins) and set(leaves) == {f"u{i}" for i in range(1300)}
    if dead.presence.identity == identity:
        assert len(leaves) == 1300


async def test_a_busy_instance_stays_alive_while_its_work_outlasts_the_timeout(make_node: MakeNode) -> None:
    async with LoopLag() as lag:
        busy, other = await make_node(timeout=SLOW), await make_node(timeout=SLOW)
        identity, loop = busy.presence.identity, asyncio.get_running_loop()
        started = loop.time()
        joins: list[asyncio.Task[bool]] = []
        for wave in range(26):  # a reconnect storm: 1,300 joins arriving over longer than the timeout
            joins += [loop.create_task(busy.presence.join(f"chat:{i % 7}", f"c{i}", f"u{i}", {}))
                      for i in range(wave * 50, wave * 50 + 50)]
            time.sleep(0.015)  # not a wait: the instance's event loop is busy (handshakes, JSON, GC)
            await asyncio.sleep(0)
        firsts = await asyncio.gather(*joins)
        assert loop.time() - started > SLOW
    if lag.could_heartbeat(busy.presence):
        assert busy.presence.identity == identity, f"declared dead with a loop lag of {lag.worst:.3f}s"
        assert sum(firsts) == 1300 and busy.changes.seen == [] and other.changes.seen == []
    else:  # the process itself stalled near or past the deadline: whole either way
        await eventually(lambda: _settled(busy), 20.0, "its re-registration, or its heartbeat in time")
    assert sum([(await other.presence.stats(f"chat:{i}")).users for i in range(7)]) == 1300


async def _settled(node: Node) -> bool:
    """Nothing expired and the node not marked dead: it either beat its deadline after
    all, or was declared dead, re-registered under a new identity and had the old one
    reaped (``could_heartbeat`` keeps a margin, so a stall near the deadline is either)."""
    p = node.presence
    return not (p._dead or p._dirty) and await p._b_expired() == []


@dataclass
class Storm:
    """Users u0..u599 in chat:0..6 (every fifth with two connections), joined and left
    through one instance; what ``join``/``leave`` answered first/last is logged, as the
    tracker would announce it."""

    node: Node
    log: Changes = field(default_factory=Changes)

    @staticmethod
    def conns(i: int) -> list[str]:
        return [f"c{i}", f"c{i}b"] if i % 5 == 0 else [f"c{i}"]

    async def join(self, i: int, conn: str) -> None:
        if await self.node.presence.join(f"chat:{i % 7}", conn, f"u{i}", {}):
            self.log.seen.append(PresenceChange(f"chat:{i % 7}", f"u{i}", "join"))

    async def leave(self, i: int, conn: str) -> None:
        if await self.node.presence.leave(f"chat:{i % 7}", conn, f"u{i}"):
            self.log.seen.append(PresenceChange(f"chat:{i % 7}", f"u{i}", "leave"))

    def first_wave(self) -> list[Coroutine[Any, Any, None]]:
        return [self.join(i, c) for i in range(300) for c in self.conns(i)]

    def second_wave(self) -> list[Coroutine[Any, Any, None]]:
        """300 more users join while a third of the first ones close one connection."""
        return [*(self.join(i, c) for i in range(300, 600) for c in self.conns(i)),
                *(self.leave(i, f"c{i}") for i in range(0, 300, 3))]

    async def settle(self, old: str, other: Node) -> None:
        p = self.node.presence

        async def settled() -> bool:
            return p.identity != old and await p._b_expired() == []

        await eventually(settled, 10 * SLOW, "re-registration, and the old identity reaped")
        await other.presence.heartbeat()  # both wait for a reaping pass in progress
        await p.heartbeat()

    async def assert_exact(self, other: Node) -> None:
        """Listed: exactly what the instance holds. Announced, per (channel, user): one
        join per membership that began, one leave per one that ended (reaped or left)."""
        held: dict[tuple[str, str], int] = {}
        for (channel, _), (user, _) in self.node.presence._joined.items():
            held[(channel, user)] = held.get((channel, user), 0) + 1
        listed = {(f"chat:{i}", m.user): m.connections
                  for i in range(7) for m in await other.presence.members(f"chat:{i}")}
        assert listed == held and len(held) == 600 - 100 + 20  # users 0, 3, 6, ... left; 20 kept a 2nd conn
        announced = self.log.seen + self.node.changes.seen + other.changes.seen
        for key in {(c.channel, c.user) for c in announced} | set(held):
            joins = sum(1 for c in announced if (c.channel, c.user) == key and c.action == "join")
            leaves = sum(1 for c in announced if (c.channel, c.user) == key and c.action == "leave")
            assert joins - leaves == (1 if key in held else 0) and leaves <= joins <= 2, (key, joins, leaves)


async def test_an_instance_reaped_while_frozen_comes_back_with_exact_joins_and_leaves(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy, other = await make_node(timeout=SLOW), await make_node(timeout=SLOW)
    storm, p = Storm(busy), busy.presence
    await asyncio.gather(*storm.first_wave())
    old, running = p.identity, asyncio.Event()
    beat, apply = p._b_heartbeat, p._b_apply

    async def frozen_beat(identity: str, *, register: bool) -> bool:
        await running.wait()
        return await beat(identity, register=register)

    async def frozen_apply(identity: str, ops: Any) -> Any:
        await running.wait()
        return await apply(identity, ops)

    # frozen (a long GC pause, a stopped VM): its heartbeats and writes go out late
    monkeypatch.setattr(p, "_b_heartbeat", frozen_beat)
    monkeypatch.setattr(p, "_b_apply", frozen_apply)
    second = asyncio.gather(*storm.second_wave())

    async def reaped() -> bool:
        return sum([(await other.presence.stats(f"chat:{i}")).connections for i in range(7)]) == 0

    await eventually(reaped, 10 * SLOW, "the other instance reaping the frozen one")
    running.set()  # it runs again: its late writes are refused, it re-registers what it holds
    await second
    await storm.settle(old, other)
    await storm.assert_exact(other)


async def test_an_instance_that_stalls_mid_storm_comes_back_with_exact_joins_and_leaves(make_node: MakeNode) -> None:
    busy, other = await make_node(timeout=SLOW), await make_node(timeout=SLOW)
    storm, p = Storm(busy), busy.presence
    await asyncio.gather(*storm.first_wave())
    old, loop = p.identity, asyncio.get_running_loop()
    second = [loop.create_task(step) for step in storm.second_wave()]
    await asyncio.sleep(0)  # the storm is under way: some of it queued, some in flight
    time.sleep(1.5 * p.ttl)  # not a wait: the process stalls past its deadline (both instances do)
    await asyncio.gather(*second)
    await storm.settle(old, other)
    await storm.assert_exact(other)


redis_only = pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)


@redis_only
async def test_lost_redis_data_is_re_registered(make_node: MakeNode, key_prefix: str, redis_url: str) -> None:
    node = await make_node()
    await node.presence.join(CH, "c1", "alice", {})
    await node.presence.connect("c1", "alice")
    admin = Redis.from_url(redis_url)
    try:  # what a Redis restart without persistence does to our keys
        await admin.delete(*[k async for k in admin.scan_iter(match=f"{key_prefix}*")])
        await node.presence.heartbeat()
        assert await node.presence.members(CH) == [PresenceMember("alice", 1, {})]
        assert await admin.hget(f"{key_prefix}pr:u", "alice") == b"1"
    finally:
        await admin.aclose()


def test_open_presence_chooses_by_scheme() -> None:
    assert isinstance(open_presence("memory://"), MemoryPresence)
    assert isinstance(open_presence("redis://127.0.0.1:6379/0", prefix="x:"), RedisPresence)
    with pytest.raises(ValueError, match="mysql"):
        open_presence("mysql://x")


async def test_unreachable_backend_raises_presence_unavailable(key_prefix: str) -> None:
    p = RedisPresence(Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2), prefix=key_prefix)
    try:
        with pytest.raises(PresenceUnavailable):
            await p.start(Changes())
        with pytest.raises(PresenceUnavailable):
            await p.members(CH)
    finally:
        await p._client.aclose()

