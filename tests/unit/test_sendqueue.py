"""The bounded Engine.IO send queue: thresholds, the cut, and nothing left to wait for."""

from __future__ import annotations

import asyncio

from engineio import packet

from server.sendqueue import BoundedSendQueue, SendBounds

FAREWELL = [packet.Packet(packet.MESSAGE, "2[\"closing\"]"), packet.Packet(packet.MESSAGE, "1")]


def msg(size: int) -> packet.Packet:
    return packet.Packet(packet.MESSAGE, "x" * size)


def make(max_messages: int = 3, max_bytes: int = 100) -> tuple[BoundedSendQueue, list[BoundedSendQueue]]:
    overflowed: list[BoundedSendQueue] = []
    return BoundedSendQueue(SendBounds(max_messages, max_bytes), overflowed.append, lambda: list(FAREWELL)), overflowed


async def test_the_message_bound_holds_at_its_threshold_and_not_before() -> None:
    queue, overflowed = make(max_messages=3)
    for _ in range(3):
        await queue.put(msg(1))
    assert (queue.messages, overflowed) == (3, [])
    await queue.put(msg(1))
    assert overflowed == [queue] and queue.sealed


async def test_the_byte_bound_holds_at_its_threshold_and_not_before() -> None:
    queue, overflowed = make(max_messages=100, max_bytes=100)
    await queue.put(msg(60))
    await queue.put(msg(40))
    assert (queue.bytes, overflowed) == (100, [])
    await queue.put(msg(1))
    assert overflowed == [queue]


async def test_a_lone_big_message_is_not_a_backlog() -> None:
    queue, overflowed = make(max_bytes=100)
    await queue.put(msg(5000))
    assert overflowed == [] and queue.messages == 1


async def test_overflow_frees_the_backlog_keeps_the_farewell_and_refuses_the_rest() -> None:
    queue, _ = make(max_messages=3)
    for _ in range(4):
        await queue.put(msg(10))
    await queue.put(msg(10))  # sealed: dropped
    await queue.put(packet.Packet(packet.CLOSE))  # control packets still go out
    await queue.put(None)
    got = [queue.get_nowait() for _ in range(queue.qsize())]
    assert got[:2] == FAREWELL and got[2].packet_type == packet.CLOSE and got[3] is None
    for _ in got:
        queue.task_done()
    await asyncio.wait_for(queue.join(), 1)  # what was dropped is not waited for


async def test_wait_roomy_waits_for_the_backlog_to_halve() -> None:
    queue, _ = make(max_messages=10, max_bytes=10_000)
    for _ in range(6):
        await queue.put(msg(1))
    waiter = asyncio.create_task(queue.wait_roomy(timeout=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.get_nowait()
    await asyncio.wait_for(waiter, 1)
    await queue.wait_roomy(timeout=0.01)  # roomy: returns at once
