"""The recovery decision pairs ``since`` with the history's epoch (in-process fakes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from channels.fanout import Fanout
from channels.models import ChannelBounds
from tests.support.fakes import ListStore, RecordingBroker, RecordingDelivery

CH = "chat:1"


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Fanout, ListStore, RecordingDelivery]]:
    store, broker, delivery = ListStore(), RecordingBroker(), RecordingDelivery()
    fanout = Fanout(store, broker, delivery, gap_timeout=0.02, recovery_max_events=100)
    await broker.start(fanout)
    yield fanout, store, delivery
    await fanout.close()


def test_can_recover_needs_the_same_epoch_unless_no_epoch_or_nothing_seen() -> None:
    bounds = ChannelBounds(head=10, first=3, epoch="e1")
    assert bounds.can_recover(5) and bounds.can_recover(5, "e1")
    assert not bounds.can_recover(5, "e0") and not bounds.can_recover(5, "")
    assert not bounds.can_recover(1, "e1") and not bounds.can_recover(11, "e1")  # the window still counts
    assert ChannelBounds(10, 1, "e1").can_recover(0, "e0")  # seq 0 is in every history
    assert ChannelBounds(0, 1).can_recover(0, "")  # a channel without history, as answered


async def test_join_answers_the_epoch_and_recovers_only_positions_of_it(
    parts: tuple[Fanout, ListStore, RecordingDelivery],
) -> None:
    fanout, store, delivery = parts
    store.put(CH, 10)
    plain = await fanout.join("plain", CH)
    assert (plain.head, plain.recovered, plain.epoch) == (10, True, "e1")
    same = await fanout.join("same", CH, since=4, epoch="e1")
    assert (same.head, same.recovered, same.epoch) == (10, True, "e1")
    assert delivery.received["same"] == [5, 6, 7, 8, 9, 10]
    other = await fanout.join("other", CH, since=4, epoch="e0")
    assert (other.head, other.recovered, other.epoch) == (10, False, "e1")
    assert delivery.received["other"] == []  # not one event of a history it did not see
    legacy = await fanout.join("legacy", CH, since=4)
    assert legacy.recovered and delivery.received["legacy"] == [5, 6, 7, 8, 9, 10]


async def test_a_reset_epoch_refuses_earlier_positions_and_is_answered_from_then_on(
    parts: tuple[Fanout, ListStore, RecordingDelivery],
) -> None:
    fanout, store, delivery = parts
    store.put(CH, 5)
    assert (await fanout.join("a", CH)).epoch == "e1"
    await store.reset_epochs(channels=[CH])  # an operator, while the channel is live here
    late = await fanout.join("b", CH, since=5, epoch="e1")
    assert (late.recovered, late.epoch) == (False, "e1+")
    assert (await fanout.join("c", CH)).epoch == "e1+"  # later subscribers learn the new one
    assert (await fanout.join("d", CH, since=3, epoch="e1+")).recovered
    assert delivery.received["d"] == [4, 5]
