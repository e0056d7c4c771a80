"""ChannelService's promises in process: SQLite, the memory broker, a recording transport.

Order and gaplessness across two instances, recovery, idempotency and authorization,
without starting a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from channels.broker.memory import MemoryHub
from channels.errors import AppError, ErrorCode
from channels.models import Principal
from channels.presence.memory import MemoryPresenceHub
from tests.support.inprocess import Instance, until

CH = "chat:room"
ALICE = Principal("alice", channels=("chat:*",))
BOB = Principal("bob", channels=("chat:*",))
READER = Principal("reader", channels=("chat:room",))  # reads chat:room; the glob also lets it publish there
STRANGER = Principal("mallory", channels=("other:*",))
SERVER = Principal("backend", role="server")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Instance, Instance]]:
    """Two instances sharing one store and one broker hub."""
    hub, presence_hub = MemoryHub(), MemoryPresenceHub()
    one = Instance(tmp_path / "events.db", hub, presence_hub)
    two = Instance(tmp_path / "events.db", hub, presence_hub)
    await one.start()
    await two.start()
    yield one, two
    await two.close()
    await one.close()


async def test_publishers_on_two_instances_give_every_subscriber_one_gapless_order(
    pair: tuple[Instance, Instance],
) -> None:
    one, two = pair
    await one.service.subscribe(ALICE, "a1", CH)
    await two.service.subscribe(BOB, "b1", CH)

    async def publish(instance: Instance, who: Principal, n: int) -> list[int]:
        acks = await asyncio.gather(*(instance.service.publish(who, CH, "msg", {"i": i}) for i in range(n)))
        return [a.event.seq for a in acks]

    seqs = await asyncio.gather(publish(one, ALICE, 60), publish(two, BOB, 60))
    assert sorted(seqs[0] + seqs[1]) == list(range(1, 121))
    await until(lambda: len(one.delivery.received["a1"]) >= 120 and len(two.delivery.received["b1"]) >= 120)
    assert one.delivery.received["a1"] == list(range(1, 121))
    assert two.delivery.received["b1"] == list(range(1, 121))


async def test_a_retried_publish_returns_the_original_seq_and_is_delivered_once(
    pair: tuple[Instance, Instance],
) -> None:
    one, two = pair
    await two.service.subscribe(BOB, "b1", CH)
    first = await one.service.publish(ALICE, CH, "msg", {"n": 1}, client_msg_id="m-1")
    again = await two.service.publish(ALICE, CH, "msg", {"n": 1}, client_msg_id="m-1")
    after = await one.service.publish(ALICE, CH, "msg", {"n": 2})
    assert (first.event.seq, first.duplicate) == (1, False)
    assert (again.event.seq, again.duplicate, again.event.id) == (1, True, first.event.id)
    await until(lambda: len(two.delivery.received["b1"]) >= 2)
    assert two.delivery.received["b1"] == [1, after.event.seq] == [1, 2]


async def test_resubscribing_with_since_gets_exactly_what_was_missed_then_live(
    pair: tuple[Instance, Instance],
) -> None:
    one, two = pair
    for i in range(30):
        await one.service.publish(ALICE, CH, "msg", {"i": i})
    result = await two.service.subscribe(BOB, "b1", CH, since=12)
    assert (result.head, result.recovered) == (30, True)
    await one.service.publish(ALICE, CH, "msg", {"i": 30})
    await until(lambda: len(two.delivery.received["b1"]) >= 19)
    assert two.delivery.received["b1"] == list(range(13, 32))


async def test_since_beyond_retention_is_answered_not_recovered(pair: tuple[Instance, Instance]) -> None:
    one, _ = pair
    for i in range(20):
        await one.service.publish(ALICE, CH, "msg", {"i": i})
    await one.store.prune("chat", max_events=5)  # keeps 16..20
    result = await one.service.subscribe(ALICE, "a1", CH, since=3)
    assert (result.head, result.recovered) == (20, False)
    assert one.delivery.received["a1"] == []
    synced = await one.service.sync(ALICE, {CH: 3})
    assert not synced[CH].recovered and [e.seq for e in synced[CH].events] == [16, 17, 18, 19, 20]


async def test_unauthorized_calls_are_refused_with_their_code_and_change_nothing(
    pair: tuple[Instance, Instance],
) -> None:
    one, _ = pair
    service = one.service
    refusals = {
        "subscribe": lambda: service.subscribe(STRANGER, "m1", CH),
        "history": lambda: service.history(STRANGER, CH),
        "sync": lambda: service.sync(STRANGER, {CH: 0}),
        "presence": lambda: service.presence(STRANGER, CH),
        "stats": lambda: service.stats(ALICE, CH),
        "personal": lambda: service.publish(ALICE, "user:bob", "msg", {}),
        "other user": lambda: service.subscribe(ALICE, "a1", "user:bob"),
    }
    for name, call in refusals.items():
        with pytest.raises(AppError) as err:
            await call()
        assert err.value.code is ErrorCode.PERMISSION_DENIED, name
    with pytest.raises(AppError) as err:
        service.publish(STRANGER, CH, "msg", {})
    assert err.value.code is ErrorCode.PERMISSION_DENIED
    with pytest.raises(AppError) as err:
        await service.subscribe(ALICE, "a1", "no namespace")
    assert err.value.code is ErrorCode.INVALID_CHANNEL
    with pytest.raises(AppError) as err:
        service.publish(ALICE, CH, "msg", {"x": "y" * 70_000})
    assert err.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    with pytest.raises(AppError) as err:
        await service.unsubscribe(ALICE, "a1", CH)
    assert err.value.code is ErrorCode.NOT_SUBSCRIBED
    assert (await one.store.bounds(CH)).head == 0 and one.fanout.live_channels() == 0
    assert (await service.publish(SERVER, "user:bob", "note", {})).event.seq == 1  # the backend may


async def test_leaving_stops_delivery_and_drops_the_channel(pair: tuple[Instance, Instance]) -> None:
    one, _ = pair
    await one.service.subscribe(ALICE, "a1", CH)
    await one.service.publish(ALICE, CH, "msg", {})
    await until(lambda: one.delivery.received["a1"] == [1])
    await one.service.unsubscribe(ALICE, "a1", CH)
    assert one.fanout.live_channels() == 0
    await one.service.publish(ALICE, CH, "msg", {})
    await one.service.subscribe(BOB, "b1", CH)  # live again, from the head
    await one.service.publish(ALICE, CH, "msg", {})
    await until(lambda: one.delivery.received["b1"] == [3])
    assert one.delivery.received["a1"] == [1]


async def test_a_sync_answer_is_bounded_in_bytes_across_channels_and_continues_where_it_stopped(
    tmp_path: Path,
) -> None:
    from channels.service import ChannelService, ServiceLimits

    instance = Instance(tmp_path / "events.db", MemoryHub(), MemoryPresenceHub())
    await instance.start()
    try:
        bounded = ChannelService(instance.store, instance.writer, instance.fanout, instance.rules,
                                 instance.tracker, limits=ServiceLimits(history_max_bytes=20_000))
        channels = [f"chat:big{i}" for i in range(3)]
        for channel in channels:
            await asyncio.gather(*(instance.service.publish(SERVER, channel, "msg", {"pad": "x" * 2_000})
                                   for _ in range(8)))
        positions = {channel: 0 for channel in channels}
        seen: dict[str, list[int]] = {channel: [] for channel in channels}
        for _ in range(10):
            answer = await bounded.sync(ALICE, positions)
            size = sum(len(e.data["pad"]) for r in answer.values() for e in r.events)
            assert 0 < size <= 20_000  # bounded, and never empty while something is missing
            for channel, result in answer.items():
                seen[channel] += [e.seq for e in result.events]
                positions[channel] = seen[channel][-1] if seen[channel] else 0
                assert result.has_more == (positions[channel] < 8)
            if not any(r.has_more for r in answer.values()):
                break
        assert seen == {channel: list(range(1, 9)) for channel in channels}
    finally:
        await instance.close()
