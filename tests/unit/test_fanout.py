"""The fan-out's ordering, gap-fill, recovery and hand-off promises, with in-process fakes.

No fixed sleeps: each test waits for the condition it needs (``until``) and checks
for duplicates only once the fan-out is idle (no pump, no filler, nothing queued).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from channels import codec
from channels.errors import AppError, ErrorCode, StoreUnavailable
from channels.fanout import Fanout
from channels.models import Event, PresenceChange
from tests.support.fakes import CountingTelemetry, ListStore, RecordingBroker, RecordingDelivery

CH = "chat:1"
Parts = tuple[Fanout, ListStore, RecordingBroker, RecordingDelivery]


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    store, broker, delivery = ListStore(), RecordingBroker(), RecordingDelivery()
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, recovery_max_events=100)
    await broker.start(fanout)
    yield fanout, store, broker, delivery
    await fanout.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (sized for a loaded machine); fail otherwise."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


def idle(fanout: Fanout) -> bool:
    """Nothing left to hand off or fill: whatever was going to be delivered has been."""
    return all(s.pump is None and s.filler is None and not s.outbox and not s.catching_up
               for s in fanout._channels.all())  # noqa: SLF001


async def settle(fanout: Fanout, delivery: RecordingDelivery, conn: str, count: int) -> None:
    """Wait until ``conn`` has ``count`` events and the fan-out is idle (a duplicate would be in by then)."""
    await until(lambda: len(delivery.received[conn]) >= count and idle(fanout))


async def test_first_join_subscribes_and_last_leave_unsubscribes(parts: Parts) -> None:
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


async def test_out_of_order_messages_are_delivered_in_order_without_duplicates(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 5)
    for seq in [2, 1, 1, 4, 3, 5, 2]:
        broker.deliver(events[seq - 1])
    await settle(fanout, delivery, "a", 5)
    assert delivery.received["a"] == [1, 2, 3, 4, 5]


async def test_a_persisting_gap_is_filled_from_the_store() -> None:
    store, broker, delivery, telemetry = ListStore(), RecordingBroker(), RecordingDelivery(), CountingTelemetry()
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, position_check_interval=0, telemetry=telemetry)
    await broker.start(fanout)
    try:
        await fanout.join("a", CH)
        events = store.put(CH, 4)
        broker.deliver(events[0])
        broker.deliver(events[3])  # 2 and 3 never arrive through the broker
        await settle(fanout, delivery, "a", 4)
        assert delivery.received["a"] == [1, 2, 3, 4]
        assert telemetry.gap_fill_events == 2  # the filler read exactly the two missing events
    finally:
        await fanout.close()


async def test_join_starts_after_current_head(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    store.put(CH, 3)
    result = await fanout.join("a", CH)
    assert (result.head, result.recovered) == (3, True)
    broker.deliver(store.put(CH, 4)[-1])
    await settle(fanout, delivery, "a", 1)
    assert delivery.received["a"] == [4]


async def test_recovery_replays_missed_then_live_with_no_gap_or_duplicate_under_traffic(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("live", CH)
    for event in store.put(CH, 50):
        broker.deliver(event)
    await settle(fanout, delivery, "live", 50)

    async def traffic() -> None:
        for seq in range(51, 121):
            broker.deliver(store.put(CH, seq)[-1])
            await asyncio.sleep(0)

    pump = asyncio.create_task(traffic())
    result = await fanout.join("late", CH, since=10)
    await pump
    await settle(fanout, delivery, "late", 110)
    assert result.recovered
    assert delivery.received["late"] == list(range(11, 121))
    assert delivery.received["live"] == list(range(1, 121))


async def test_since_older_than_retention_is_not_recovered(parts: Parts) -> None:
    fanout, store, _, delivery = parts
    store.put(CH, 30)
    store.first[CH] = 21
    result = await fanout.join("a", CH, since=5)
    assert (result.head, result.recovered) == (30, False)
    assert delivery.received["a"] == []
    ok = await fanout.join("b", CH, since=20)
    assert ok.recovered and delivery.received["b"] == list(range(21, 31))


async def test_too_many_missed_events_is_not_recovered(parts: Parts) -> None:
    fanout, store, _, delivery = parts
    store.put(CH, 150)
    result = await fanout.join("a", CH, since=10)  # 140 missed > recovery_max_events=100
    assert not result.recovered and delivery.received["a"] == []


async def test_since_ahead_of_local_delivery_skips_what_the_client_has(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("x", CH)
    events = store.put(CH, 3)  # committed, not yet seen by this instance
    result = await fanout.join("a", CH, since=2)  # the client saw 1..2 on another instance
    for event in events:
        broker.deliver(event)
    await settle(fanout, delivery, "a", 1)
    assert result.recovered
    assert delivery.received["a"] == [3]


async def test_resubscribe_reads_what_the_broker_lost(parts: Parts) -> None:
    fanout, store, _, delivery = parts
    await fanout.join("a", CH)
    store.put(CH, 3)  # published while the broker connection was down
    fanout.on_resubscribed()
    await settle(fanout, delivery, "a", 3)
    assert delivery.received["a"] == [1, 2, 3]


async def test_local_commits_are_delivered_and_broker_echo_is_dropped(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 2)
    fanout.on_local_commit(events)
    await settle(fanout, delivery, "a", 2)
    for event in events:
        broker.deliver(event)
    await settle(fanout, delivery, "a", 2)
    assert delivery.received["a"] == [1, 2]


async def test_events_arriving_during_a_gap_fill_read_are_not_delivered_twice(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 6)
    real_read = store.read
    fills: list[int] = []

    async def read_while_broker_catches_up(channel: str, **kw):  # type: ignore[no-untyped-def]
        rows = await real_read(channel, **kw)
        for event in events[:5]:  # the broker delivers the missing events mid-read
            broker.deliver(event)
        fills.append(len(rows))
        return rows

    store.read = read_while_broker_catches_up  # type: ignore[method-assign]
    broker.deliver(events[2])  # seq 3 arrives first: a gap
    await until(lambda: bool(fills))  # the gap filler ran
    store.read = real_read  # type: ignore[method-assign]
    for event in events:  # the echo of every event arrives again
        broker.deliver(event)
    await settle(fanout, delivery, "a", 6)
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
        await settle(fanout, delivery, "a", 3)
        assert delivery.received["a"] == [1, 2, 3]
    finally:
        await fanout.close()


async def test_failed_activation_answers_unavailable_and_drops_the_broker_subscription(parts: Parts) -> None:
    fanout, store, broker, _ = parts

    async def store_down(channel: str):  # type: ignore[no-untyped-def]
        raise StoreUnavailable()

    store.bounds = store_down  # type: ignore[method-assign]
    with pytest.raises(AppError) as err:
        await fanout.join("a", CH)
    assert err.value.code is ErrorCode.UNAVAILABLE
    assert broker.history == [("subscribe", CH), ("unsubscribe", CH)]
    assert fanout.live_channels() == 0 and fanout.members(CH) == 0


async def test_events_committed_after_a_fill_reads_snapshot_are_not_taken_for_pruned(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    for event in store.put(CH, 3):
        broker.deliver(event)
    await settle(fanout, delivery, "a", 3)
    real_read = store.read
    snapshots: list[int] = []

    async def snapshot_then_commits_land(channel: str, **kw):  # type: ignore[no-untyped-def]
        rows = await real_read(channel, **kw)  # the read's snapshot: nothing after 3
        if not snapshots:
            later = store.put(CH, 5)  # 4 and 5 commit after it; only 5's broker message arrives
            broker.deliver(later[-1])
        snapshots.append(len(rows))
        return rows

    store.read = snapshot_then_commits_land  # type: ignore[method-assign]
    fanout.on_resubscribed()  # a fill with nothing pending yet
    await settle(fanout, delivery, "a", 5)
    store.read = real_read  # type: ignore[method-assign]
    assert snapshots[0] == 0
    assert delivery.received["a"] == [1, 2, 3, 4, 5]


async def test_presence_messages_reach_the_room_and_leave_event_order_alone(parts: Parts) -> None:
    fanout, store, broker, delivery = parts
    await fanout.join("a", CH)
    events = store.put(CH, 2)
    join = PresenceChange(CH, "alice", "join")
    assert broker.listener is not None
    broker.listener.on_message(CH, codec.encode_presence(join))
    broker.deliver(events[1])  # seq 2 first: a gap that presence must not disturb
    broker.listener.on_message(CH, codec.encode_presence(PresenceChange("chat:other", "x", "join")))  # wrong channel
    broker.deliver(events[0])
    await settle(fanout, delivery, "a", 2)
    await until(lambda: bool(delivery.presence_seen["a"]))
    assert delivery.received["a"] == [1, 2]
    assert delivery.presence_seen["a"] == [join]


class FailingOnceDelivery(RecordingDelivery):
    """A hand-off that raises once, for one seq, before anyone got it."""

    def __init__(self, fail_seq: int) -> None:
        super().__init__()
        self.fail_seq = fail_seq
        self.failed = 0

    async def broadcast(self, channel: str, event: Event) -> None:
        if event.seq == self.fail_seq and not self.failed:
            self.failed += 1
            raise RuntimeError("socket layer hiccup")
        await super().broadcast(channel, event)


async def test_a_failed_local_hand_off_is_counted_and_every_subscriber_still_gets_every_seq(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, broker, telemetry = ListStore(), RecordingBroker(), CountingTelemetry()
    delivery = FailingOnceDelivery(fail_seq=3)
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, position_check_interval=0, telemetry=telemetry)
    await broker.start(fanout)
    try:
        for conn in ("a", "b", "c"):
            await fanout.join(conn, CH)
        for event in store.put(CH, 6):
            broker.deliver(event)
        for conn in ("a", "b", "c"):
            await settle(fanout, delivery, conn, 6)
            assert delivery.received[conn] == [1, 2, 3, 4, 5, 6]
        assert delivery.failed == 1 and telemetry.handoff_failures == 1
        failures = [r for r in caplog.records if "hand-off" in r.getMessage() and "failed" in r.getMessage()]
        assert len(failures) == 1 and "socket layer hiccup" in failures[0].getMessage()
    finally:
        await fanout.close()


class StalledDelivery(RecordingDelivery):
    """One connection whose output never makes room: its replay waits on it alone."""

    def __init__(self, stalled: str) -> None:
        super().__init__()
        self.stalled = stalled
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def writable(self, conn_id: str) -> bool:
        if conn_id != self.stalled:
            return True
        self.waiting.set()
        await self.release.wait()
        return False  # the delivery's time bound passed: it has cut the connection off


async def test_a_replay_waiting_on_its_connection_does_not_hold_up_the_channel() -> None:
    store, broker = ListStore(), RecordingBroker()
    delivery = StalledDelivery("slow")
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, position_check_interval=0)
    await broker.start(fanout)
    try:
        await fanout.join("live", CH)
        for event in store.put(CH, 20):
            broker.deliver(event)
        await settle(fanout, delivery, "live", 20)
        joining = asyncio.create_task(fanout.join("slow", CH, since=0))
        await asyncio.wait_for(delivery.waiting.wait(), 10)
        for event in store.put(CH, 40):  # live traffic while the replay is stuck
            broker.deliver(event)
        await until(lambda: len(delivery.received["live"]) == 40)
        assert delivery.received["live"] == list(range(1, 41))
        delivery.release.set()
        with pytest.raises(AppError) as err:
            await joining
        assert err.value.code is ErrorCode.UNAVAILABLE
        assert fanout.members(CH) == 1 and "slow" not in delivery.rooms[CH]
    finally:
        await fanout.close()
