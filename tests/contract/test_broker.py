"""The ``Broker`` contract, held against every adapter.

Two brokers on one backend (same Redis and prefix, or one ``MemoryHub``) stand
for two instances. Absence is proven with a marker: a message on another
subscribed channel, published after the unwanted one, arrives through the same
ordered stream, then a short grace period covers any stray delivery.

Nothing here waits a fixed time for something to happen: tests wait for the
condition (``eventually``), and races are staged by holding commands in a proxy,
not by sleeping between them, so a busy machine makes the suite slower, never red.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from channels.broker import MemoryBroker, MemoryHub, open_broker
from channels.broker.redis import RedisBroker
from channels.errors import BrokerUnavailable
from channels.ports import Broker, BrokerListener
from tests.support.waiting import LOADED, eventually

# How long absence is awaited after the marker arrived. This sleep is the behaviour
# under test (nothing more arrives) and can only make a test pass, never fail: a
# stray message that comes later than GRACE on a slow machine goes unnoticed.
GRACE = 0.1


@dataclass
class Recorder(BrokerListener):
    """A listener that records what it is given, and can be made to fail."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    resubscribed: int = 0
    fail_on: bytes | None = None

    def on_message(self, channel: str, payload: bytes) -> None:
        if payload == self.fail_on:
            raise RuntimeError("listener bug")
        self.messages.append((channel, payload))

    def on_resubscribed(self) -> None:
        self.resubscribed += 1

    def payloads(self, channel: str) -> list[bytes]:
        return [p for c, p in self.messages if c == channel]


@dataclass
class Node:
    broker: Broker
    seen: Recorder
    client_name: str | None = None

    async def has(self, channel: str, count: int, timeout: float = LOADED) -> list[bytes]:
        await eventually(lambda: len(self.seen.payloads(channel)) >= count, timeout, f"{count} on {channel}")
        return self.seen.payloads(channel)


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # skips (or fails in CI) without Redis
    return str(request.param)


@pytest.fixture
async def make_node(backend: str, key_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeNode]:
    """Factory of started brokers on one backend; ``url`` and adapter ``options`` are optional."""
    hub = MemoryHub()
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(prefix: str | None = None, *, url: str | None = None, **options: Any) -> Node:
        prefix = key_prefix if prefix is None else prefix
        name = None
        if backend == "redis":
            name = f"sbtest-{uuid.uuid4().hex[:12]}"
            client = Redis.from_url(url or request.getfixturevalue("redis_url"), client_name=name)
            cleanups.append(client.aclose)
            broker: Broker = RedisBroker(client, prefix=prefix, **options)
        else:
            broker = MemoryBroker(hub, prefix=prefix, **options)
        cleanups.append(broker.close)
        node = Node(broker, Recorder(), name)
        await broker.start(node.seen)
        return node

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def broker_pair(make_node: MakeNode) -> tuple[Node, Node]:
    """Two started brokers sharing one backend, like two instances."""
    return await make_node(), await make_node()


redis_only = pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
memory_only = pytest.mark.parametrize("backend", ["memory"], indirect=True)


async def test_delivers_only_subscribed_channels(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    await b.broker.subscribe("room:1")
    await b.broker.subscribe("marker")
    await a.broker.publish([("room:1", b"\x00\xffbinary"), ("room:2", b"not for b"), ("marker", b"m")])
    assert await b.has("room:1", 1) == [b"\x00\xffbinary"]
    await b.has("marker", 1)
    await asyncio.sleep(GRACE)
    assert b.seen.messages == [("room:1", b"\x00\xffbinary"), ("marker", b"m")]
    assert a.seen.messages == []


async def test_publisher_receives_its_own_channels(broker_pair: tuple[Node, Node]) -> None:
    a, _ = broker_pair
    await a.broker.subscribe("echo")
    await a.broker.publish([("echo", b"1")])
    assert await a.has("echo", 1) == [b"1"]


async def test_order_is_preserved_per_channel(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    for channel in ("x", "y"):
        await b.broker.subscribe(channel)
    expected = {"x": [b"x%d" % i for i in range(200)], "y": [b"y%d" % i for i in range(200)]}
    for i in range(200):
        await a.broker.publish([("x", expected["x"][i])])
        await a.broker.publish([("y", expected["y"][i])])
    assert await b.has("x", 200) == expected["x"]
    assert await b.has("y", 200) == expected["y"]


async def test_subscribe_then_publish_is_never_lost(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    for i in range(50):
        await b.broker.subscribe(f"fresh:{i}")
        await a.broker.publish([(f"fresh:{i}", b"%d" % i)])
    await eventually(lambda: len(b.seen.messages) == 50, what="50 messages")
    assert sorted(b.seen.messages) == sorted((f"fresh:{i}", b"%d" % i) for i in range(50))


async def test_unsubscribe_stops_delivery(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    await b.broker.subscribe("gone")
    await b.broker.subscribe("marker")
    await a.broker.publish([("gone", b"1")])
    await b.has("gone", 1)
    await b.broker.unsubscribe("gone")
    await a.broker.publish([("gone", b"2"), ("marker", b"m")])
    await b.has("marker", 1)
    await asyncio.sleep(GRACE)
    assert b.seen.payloads("gone") == [b"1"]


async def test_double_subscribe_and_unknown_unsubscribe_are_harmless(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    await b.broker.unsubscribe("never-subscribed")
    await b.broker.subscribe("twice")
    await b.broker.subscribe("twice")
    await a.broker.publish([("twice", b"once")])
    await b.has("twice", 1)
    await asyncio.sleep(GRACE)
    assert b.seen.payloads("twice") == [b"once"]
    await b.broker.unsubscribe("twice")
    await b.broker.unsubscribe("twice")
    await b.broker.subscribe("twice")
    await a.broker.publish([("twice", b"again")])
    assert await b.has("twice", 2) == [b"once", b"again"]


async def test_subscription_churn_ends_in_the_last_state(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    await b.broker.subscribe("marker")
    for i in range(20):
        on, off = f"on:{i}", f"off:{i}"
        await asyncio.gather(b.broker.subscribe(on), b.broker.unsubscribe(on), b.broker.subscribe(on))
        await asyncio.gather(b.broker.subscribe(off), b.broker.unsubscribe(off))
        await a.broker.publish([(on, b"on"), (off, b"off")])
    await a.broker.publish([("marker", b"m")])
    await b.has("marker", 1)
    await asyncio.sleep(GRACE)
    assert sorted(c for c, _ in b.seen.messages) == sorted([f"on:{i}" for i in range(20)] + ["marker"])


async def test_pipelined_publish_of_1000_arrives_complete_and_ordered(broker_pair: tuple[Node, Node]) -> None:
    a, b = broker_pair
    await b.broker.subscribe("bulk")
    payloads = [b"%04d" % i for i in range(1000)]
    await a.broker.publish([("bulk", p) for p in payloads])
    assert await b.has("bulk", 1000) == payloads
    await a.broker.publish([])


async def test_a_batch_larger_than_one_command_arrives_complete_and_ordered(broker_pair: tuple[Node, Node]) -> None:
    # Redis publishes a batch in chunks (by count and by bytes): cross both limits
    a, b = broker_pair
    await b.broker.subscribe("big")
    await b.broker.subscribe("small")
    small = [b"%05d" % i for i in range(2500)]
    big = [bytes([65 + i % 26]) * 300_000 for i in range(8)]  # 2.4 MB together
    mixed = [("small", p) for p in small[:1200]] + [("big", p) for p in big] + [("small", p) for p in small[1200:]]
    await a.broker.publish(mixed)
    assert await b.has("small", 2500) == small
    assert await b.has("big", 8) == big


@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_publish_works_after_redis_forgets_its_scripts(broker_pair: tuple[Node, Node], redis_url: str) -> None:
    # the Redis broker publishes a batch with a script; a restarted Redis has none
    a, b = broker_pair
    await b.broker.subscribe("after-flush")
    await a.broker.publish([("after-flush", b"1")])
    admin = Redis.from_url(redis_url)
    try:
        await admin.script_flush()  # what a Redis restart does too
    finally:
        await admin.aclose()
    await a.broker.publish([("after-flush", b"2")])
    assert await b.has("after-flush", 2) == [b"1", b"2"]


async def test_prefixes_isolate_deployments(broker_pair: tuple[Node, Node], make_node: MakeNode, key_prefix: str) -> None:
    a, b = broker_pair
    other = await make_node(f"{key_prefix}other:")
    for node in (b, other):
        await node.broker.subscribe("room")
    await a.broker.publish([("room", b"from a")])
    await other.broker.publish([("room", b"from other")])
    await b.has("room", 1)
    await other.has("room", 1)
    await asyncio.sleep(GRACE)
    assert b.seen.messages == [("room", b"from a")]
    assert other.seen.messages == [("room", b"from other")]


async def test_a_failing_listener_does_not_stop_delivery(
    broker_pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = broker_pair
    b.seen.fail_on = b"boom"
    await b.broker.subscribe("c")
    with caplog.at_level(logging.ERROR):
        await a.broker.publish([("c", b"1"), ("c", b"boom"), ("c", b"2")])
        assert await b.has("c", 2) == [b"1", b"2"]
    assert "listener failed" in caplog.text


async def test_close_is_idempotent_and_leaves_no_tasks(make_node: MakeNode) -> None:
    before = asyncio.all_tasks()
    node = await make_node()
    await node.broker.subscribe("c")
    await node.broker.publish([("c", b"1")])
    await node.has("c", 1)
    await node.broker.ping()
    await node.broker.close()
    await node.broker.close()
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
    for call in (node.broker.ping(), node.broker.publish([("c", b"2")]), node.broker.subscribe("d")):
        with pytest.raises(BrokerUnavailable):
            await call


@memory_only
async def test_memory_overflow_drops_and_reports_a_gap(make_node: MakeNode) -> None:
    node = await make_node(max_pending=10)
    await node.broker.subscribe("flood")
    await node.broker.publish([("flood", b"%d" % i) for i in range(50)])
    assert await node.has("flood", 10) == [b"%d" % i for i in range(10)]
    assert node.seen.resubscribed == 1


async def test_open_broker_chooses_by_scheme(key_prefix: str) -> None:
    assert isinstance(open_broker("memory://"), MemoryBroker)
    redis_broker = open_broker("redis://127.0.0.1:1/0", prefix=key_prefix)
    assert isinstance(redis_broker, RedisBroker)
    await redis_broker.close()
    with pytest.raises(ValueError, match="'kafka'"):
        open_broker("kafka://secret@host")


# -- Redis only: the connection is lost and must be recovered ----------------------


async def kill_connections(client_name: str, kind: str | None = "pubsub") -> None:
    """Kill one broker's connections (of ``kind``), found by name: other tests run alongside."""
    admin = Redis.from_url(redis_url_of_tests())
    try:
        clients = await (admin.client_list(_type=kind) if kind else admin.client_list())
        ids = [c["id"] for c in clients if c.get("name") == client_name]
        assert ids
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
    finally:
        await admin.aclose()


def redis_url_of_tests() -> str:
    from tests.support.services import REDIS_URL

    return REDIS_URL


@redis_only
async def test_listener_survives_a_killed_connection(broker_pair: tuple[Node, Node], make_node: MakeNode) -> None:
    a, b = broker_pair
    idle = await make_node()  # nothing to resubscribe: on_resubscribed all the same
    for channel in ("one", "two"):
        await b.broker.subscribe(channel)
    await a.broker.publish([("one", b"before")])
    await b.has("one", 1)
    assert b.client_name is not None and idle.client_name is not None
    await kill_connections(b.client_name)
    await kill_connections(idle.client_name, kind=None)
    await eventually(lambda: idle.seen.resubscribed == 1, what="on_resubscribed without channels")
    await b.broker.subscribe("three")  # while the listener notices and reconnects
    await eventually(lambda: b.seen.resubscribed == 1, what="on_resubscribed")
    await a.broker.publish([("one", b"after"), ("two", b"after"), ("three", b"after")])
    assert await b.has("one", 2) == [b"before", b"after"]
    assert await b.has("two", 1) == [b"after"]
    assert await b.has("three", 1) == [b"after"]
    assert b.seen.resubscribed == 1


class FlakyProxy:
    """A TCP proxy to Redis that can refuse or silently swallow all traffic, or hold
    the client -> Redis direction and let it through chunk by chunk."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.mode = "pass"
        self.accepted = 0  # connections the clients opened (a reconnect shows up here)
        self.pings = 0  # PING commands carried to Redis
        self._holding = False
        self._held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._tainted: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def cut(self) -> None:
        self.mode = "refuse"
        self._abort(self._links)

    def silence(self) -> None:
        self.mode = "silent"

    def restore(self) -> None:
        self.mode = "pass"
        self._abort(self._tainted)  # their streams lost bytes

    def hold(self) -> None:
        """Keep what clients send back from Redis until ``release``."""
        self._holding = True

    async def holding(self, count: int) -> None:
        """Wait until ``count`` chunks are held. A test that waits for each command it
        sends before sending the next keeps one command per chunk."""
        await eventually(lambda: len(self._held) >= count, what=f"{count} chunks held by the proxy")

    async def release(self, count: int | None = None) -> None:
        """Send the first ``count`` held chunks on, in order; all of them, and stop holding, if None."""
        batch = self._held if count is None else self._held[:count]
        self._held = [] if count is None else self._held[count:]
        for to, data in batch:  # written without an await in between: order is kept
            to.write(data)
        if count is None:
            self._holding = False
        for to, _ in batch:
            with contextlib.suppress(OSError):
                await to.drain()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._abort(self._links)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        await self._server.wait_closed()

    def _abort(self, writers: set[asyncio.StreamWriter]) -> None:
        for writer in list(writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer, writer, upstream=True), self._pump(up_reader, writer, up_writer)
        )

    async def _pump(
        self, reader: asyncio.StreamReader, to: asyncio.StreamWriter, back: asyncio.StreamWriter, upstream: bool = False
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream and b"PING" in data:
                    self.pings += 1
                if self.mode != "pass":
                    self._tainted |= {to, back}
                elif upstream and self._holding:
                    self._held.append((to, data))
                else:
                    to.write(data)
                    await to.drain()
        except OSError:
            pass
        finally:
            to.transport.abort()
            self._links.discard(to)
            self._tainted.discard(to)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FlakyProxy]:
    proxy = FlakyProxy(redis_url)
    yield proxy
    await proxy.close()


# Short enough that an outage is noticed within seconds, long enough that a loaded
# machine's Redis round trip is never taken for one.
FAST = {"subscribe_timeout": 2.0, "command_timeout": 2.0, "backoff_max": 0.1}


@redis_only
async def test_outage_keeps_intent_and_recovers(proxy: FlakyProxy, broker_pair: tuple[Node, Node], make_node: MakeNode) -> None:
    a, _ = broker_pair
    b = await make_node(url=await proxy.start(), **FAST)
    for channel in ("kept", "dropped", "marker"):
        await b.broker.subscribe(channel)
    proxy.cut()
    with pytest.raises(BrokerUnavailable):
        await b.broker.subscribe("added")
    await asyncio.wait_for(b.broker.unsubscribe("dropped"), 5)  # it does not wait for Redis
    for call in (b.broker.publish([("kept", b"lost")]), b.broker.ping()):
        with pytest.raises(BrokerUnavailable):
            await call
    proxy.restore()
    await eventually(lambda: b.seen.resubscribed == 1, what="on_resubscribed")
    await a.broker.publish([("kept", b"1"), ("added", b"1"), ("dropped", b"1"), ("marker", b"m")])
    await b.has("marker", 1)
    await asyncio.sleep(GRACE)
    assert sorted(c for c, _ in b.seen.messages) == ["added", "kept", "marker"]
    await b.broker.ping()


@redis_only
async def test_subscribe_waits_for_redis_not_for_the_socket(
    proxy: FlakyProxy, broker_pair: tuple[Node, Node], make_node: MakeNode, key_prefix: str
) -> None:
    """The subscriber is far from Redis, the publisher close: commands can be overtaken.

    The proxy holds the subscriber's commands and the test lets them reach Redis one
    at a time, so the race happens in the order that exposes it on any machine.
    """
    a, _ = broker_pair
    b = await make_node(url=await proxy.start(), health_interval=600)  # no PING among the held commands
    await b.broker.subscribe("marker")
    await b.broker.subscribe("fresh")
    await a.broker.publish([("fresh", b"1")])
    await b.has("fresh", 1)
    admin = Redis.from_url(redis_url_of_tests())

    async def subscribed_in_redis() -> bool:
        [(_, count)] = await admin.pubsub_numsub(f"{key_prefix}ch:x")
        return int(count) == 1

    async def unsubscribed_in_redis() -> bool:
        return not await subscribed_in_redis()

    try:
        # An older confirmation must not stand for a later SUBSCRIBE of the same channel.
        proxy.hold()
        first = asyncio.create_task(b.broker.subscribe("x"))
        await proxy.holding(1)
        await b.broker.unsubscribe("x")  # supersedes the first subscribe
        await proxy.holding(2)
        await first
        second = asyncio.create_task(b.broker.subscribe("x"))
        await proxy.holding(3)
        await proxy.release(1)  # Redis subscribes x and confirms...
        await eventually(subscribed_in_redis, what="Redis to subscribe x")
        await proxy.release(1)  # ...then unsubscribes it; the second SUBSCRIBE is still held
        await eventually(unsubscribed_in_redis, what="Redis to unsubscribe x")
        await a.broker.publish([("marker", b"m1")])  # after both confirmations on b's connection
        await b.has("marker", 1)
        assert not second.done(), "subscribe returned before Redis subscribed the channel"
        await proxy.release(1)
        await asyncio.wait_for(second, LOADED)
        await a.broker.publish([("x", b"1")])
        await b.has("x", 1)

        # An UNSUBSCRIBE still on its way must not let messages through.
        await b.broker.unsubscribe("fresh")
        await proxy.holding(1)
        await a.broker.publish([("fresh", b"2"), ("marker", b"m2")])  # Redis still sends b both
        await b.has("marker", 2)
        await proxy.release()
    finally:
        await admin.aclose()
    await asyncio.sleep(GRACE)
    assert b.seen.payloads("fresh") == [b"1"]
    assert b.seen.payloads("x") == [b"1"]


@redis_only
async def test_silent_connection_is_detected_by_ping(proxy: FlakyProxy, broker_pair: tuple[Node, Node], make_node: MakeNode) -> None:
    a, _ = broker_pair
    # an unanswered ping costs two intervals: long enough for a loaded machine's round trip
    b = await make_node(url=await proxy.start(), health_interval=1.0, **FAST)
    await b.broker.subscribe("c")
    connections = proxy.accepted
    await eventually(lambda: proxy.pings >= 2, what="two idle pings")
    assert b.seen.resubscribed == 0 and proxy.accepted == connections  # answered: no reconnect
    proxy.silence()
    await eventually(lambda: proxy.accepted > connections, what="a reconnect after the silence")
    proxy.restore()
    await eventually(lambda: b.seen.resubscribed == 1, what="on_resubscribed")
    await a.broker.publish([("c", b"after")])
    assert await b.has("c", 1) == [b"after"]
