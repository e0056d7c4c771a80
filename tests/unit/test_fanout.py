"""The fan-out's ordering, gap-fill and recovery promises, with in-process fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from channels.fanout import Fanout
from tests.support.fakes import ListStore, RecordingBroker, RecordingDelivery, make_event

CH = "chat:1"


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Fanout, ListStore, RecordingBroker, RecordingDelivery]]:
    store, broker, delivery = ListStore(), RecordingBroker(), RecordingDelivery()
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, recovery_max_events=100)
    await broker.start(fanout)
    yield fanout, store, broker, delivery
    await fanout.close()


async def settle(delivery: RecordingDelivery, conn: str, count: int, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if len(delivery.received[conn]) >= count:
            return
        await asyncio.sleep(0.005)


async def test_first_join_subscribes_and_last_leave_unsubscribes(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, _, broker, _ = parts
    await fanout.join("a", CH)
    await fanout.join("b", CH)
    assert broker.history == [("subscribe", CH)]
    assert await fanout.leave("a", CH)
    assert CH in broker.subscribed
    assert await fanout.leave("b", CH)
    assert broker.history == [("subscribe", CH), ("unsubscribe", CH)]
    assert not await fanout.leave("b", CH)
    assert fanout.live_channels() == 0


async def test_out_of_order_messages_are_delivered_in_order_without_duplicates(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 5)
    for seq in [2, 1, 1, 4, 3, 5, 2]:
        broker.deliver(events[seq - 1])
    await settle(delivery, "a", 5)
    await asyncio.sleep(0.05)
    assert delivery.received["a"] == [1, 2, 3, 4, 5]


async def test_a_persisting_gap_is_filled_from_the_store(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 4)
    broker.deliver(events[0])
    broker.deliver(events[3])  # 2 and 3 never arrive through the broker
    await settle(delivery, "a", 4)
    assert delivery.received["a"] == [1, 2, 3, 4]


async def test_join_starts_after_current_head(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    store.put(CH, 3)
    result = await fanout.join("a", CH)
    assert (result.head, result.recovered) == (3, True)
    broker.deliver(store.put(CH, 4)[-1])
    await settle(delivery, "a", 1)
    assert delivery.received["a"] == [4]


async def test_recovery_replays_missed_then_live_with_no_gap_or_duplicate_under_traffic(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("live", CH)
    for event in store.put(CH, 50):
        broker.deliver(event)
    await settle(delivery, "live", 50)

    async def traffic() -> None:
        for seq in range(51, 121):
            broker.deliver(store.put(CH, seq)[-1])
            await asyncio.sleep(0)

    pump = asyncio.create_task(traffic())
    result = await fanout.join("late", CH, since=10)
    await pump
    await settle(delivery, "late", 110)
    await asyncio.sleep(0.05)
    assert result.recovered
    assert delivery.received["late"] == list(range(11, 121))
    assert delivery.received["live"] == list(range(1, 121))


async def test_since_older_than_retention_is_not_recovered(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, _, delivery = parts
    store.put(CH, 30)
    store.first[CH] = 21
    result = await fanout.join("a", CH, since=5)
    assert (result.head, result.recovered) == (30, False)
    assert delivery.received["a"] == []
    ok = await fanout.join("b", CH, since=20)
    assert ok.recovered and delivery.received["b"] == list(range(21, 31))


async def test_too_many_missed_events_is_not_recovered(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, _, delivery = parts
    store.put(CH, 150)
    result = await fanout.join("a", CH, since=10)  # 140 missed > recovery_max_events=100
    assert not result.recovered and delivery.received["a"] == []


async def test_since_ahead_of_local_delivery_skips_what_the_client_has(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("x", CH)
    events = store.put(CH, 3)  # committed, not yet seen by this instance
    result = await fanout.join("a", CH, since=2)  # the client saw 1..2 on another instance
    for event in events:
        broker.deliver(event)
    await settle(delivery, "a", 1)
    await asyncio.sleep(0.03)
    assert result.recovered
    assert delivery.received["a"] == [3]


async def test_resubscribe_reads_what_the_broker_lost(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    store.put(CH, 3)  # published while the broker connection was down
    fanout.on_resubscribed()
    await settle(delivery, "a", 3)
    assert delivery.received["a"] == [1, 2, 3]


async def test_local_commits_are_delivered_and_broker_echo_is_dropped(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 2)
    fanout.on_local_commit(events)
    for event in events:
        broker.deliver(event)
    await settle(delivery, "a", 2)
    await asyncio.sleep(0.03)
    assert delivery.received["a"] == [1, 2]
    assert make_event(CH, 1).seq == 1


async def test_events_arriving_during_a_gap_fill_read_are_not_delivered_twice(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 6)
    real_read = store.read

    async def read_while_broker_catches_up(channel: str, **kw):  # type: ignore[no-untyped-def]
        rows = await real_read(channel, **kw)
        for event in events[:5]:  # the broker delivers the missing events mid-read
            broker.deliver(event)
        return rows

    store.read = read_while_broker_catches_up  # type: ignore[method-assign]
    broker.deliver(events[2])  # seq 3 arrives first: a gap
    await asyncio.sleep(0.05)  # the gap filler runs
    store.read = real_read  # type: ignore[method-assign]
    for event in events:  # the echo of every event arrives again
        broker.deliver(event)
    await settle(delivery, "a", 6)
    await asyncio.sleep(0.05)
    assert delivery.received["a"] == [1, 2, 3, 4, 5, 6]


async def test_lost_broker_message_of_the_latest_event_is_found_by_the_position_check() -> None:
    store, broker, delivery = ListStore(), RecordingBroker(), RecordingDelivery()
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, position_check_interval=0.02)
    await broker.start(fanout)
    await fanout.start()
    try:
        await fanout.join("a", CH)
        events = store.put(CH, 3)
        broker.deliver(events[0])
        broker.deliver(events[1])  # seq 3's broker message is lost; no later event reveals the gap
        await settle(delivery, "a", 3)
        assert delivery.received["a"] == [1, 2, 3]
    finally:
        await fanout.close()


async def test_failed_activation_answers_unavailable_and_drops_the_broker_subscription(parts) -> None:  # type: ignore[no-untyped-def]
    from channels.errors import AppError, ErrorCode, StoreUnavailable

    fanout, store, broker, _ = parts

    async def store_down(channel: str):  # type: ignore[no-untyped-def]
        raise StoreUnavailable()

    store.bounds = store_down  # type: ignore[method-assign]
    with pytest.raises(AppError) as err:
        await fanout.join("a", CH)
    assert err.value.code is ErrorCode.UNAVAILABLE
    assert broker.history == [("subscribe", CH), ("unsubscribe", CH)]
    assert fanout.live_channels() == 0 and fanout.members(CH) == 0


async def test_events_committed_after_a_fill_reads_snapshot_are_not_taken_for_pruned(parts) -> None:  # type: ignore[no-untyped-def]
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    for event in store.put(CH, 3):
        broker.deliver(event)
    await settle(delivery, "a", 3)
    real_read = store.read

    async def snapshot_then_commits_land(channel: str, **kw):  # type: ignore[no-untyped-def]
        rows = await real_read(channel, **kw)  # the read's snapshot: nothing after 3
        later = store.put(CH, 5)  # 4 and 5 commit after it; only 5's broker message arrives
        broker.deliver(later[-1])
        return rows

    store.read = snapshot_then_commits_land  # type: ignore[method-assign]
    fanout.on_resubscribed()  # a fill with nothing pending yet
    await asyncio.sleep(0.01)
    store.read = real_read  # type: ignore[method-assign]
    await settle(delivery, "a", 5)
    await asyncio.sleep(0.05)
    assert delivery.received["a"] == [1, 2, 3, 4, 5]


async def test_presence_messages_reach_the_room_and_leave_event_order_alone(parts) -> None:  # type: ignore[no-untyped-def]
    from channels import codec
    from channels.models import PresenceChange

    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 2)
    join = PresenceChange(CH, "alice", "join")
    assert broker.listener is not None
    broker.listener.on_message(CH, codec.encode_presence(join))
    broker.deliver(events[1])  # seq 2 first: a gap that presence must not disturb
    broker.listener.on_message(CH, codec.encode_presence(PresenceChange("chat:other", "x", "join")))  # wrong channel
    broker.deliver(events[0])
    await settle(delivery, "a", 2)
    await asyncio.sleep(0.02)
    assert delivery.received["a"] == [1, 2]
    assert delivery.presence_seen["a"] == [join]
