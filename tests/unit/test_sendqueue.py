"""The per-socket send queue behaves as the ``asyncio.Queue`` engineio expects, in less memory."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from engineio import packet as eio_packet

from server.sendqueue import TrackedQueue
from tests.support.waiting import LOADED


async def test_fifo_with_size_and_join() -> None:
    queue = TrackedQueue()
    for data in ("a", "bb", "ccc"):
        queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data))
    assert queue.qsize() == 3 and queue.size == 6
    assert [queue.get_nowait().data for _ in range(3)] == ["a", "bb", "ccc"]
    assert queue.empty() and queue.size == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    joined = asyncio.create_task(queue.join())
    await asyncio.sleep(0)
    assert not joined.done()  # three taken, none marked done
    for _ in range(3):
        queue.task_done()
    await asyncio.wait_for(joined, LOADED)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_a_waiting_getter_is_woken_in_order() -> None:
    queue = TrackedQueue()
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await asyncio.wait_for(first, LOADED) == 1
    assert await asyncio.wait_for(second, LOADED) == 2


async def test_a_getter_cancelled_after_its_wake_up_passes_the_item_on() -> None:
    queue = TrackedQueue()
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes ``first``
    first.cancel()
    assert await asyncio.wait_for(second, LOADED) == "x"
    assert first.cancelled()


async def test_a_timed_out_get_leaves_no_waiter_behind() -> None:
    queue = TrackedQueue()
    with pytest.raises(TimeoutError):  # nothing was put: a slow machine cannot make it arrive
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("x")
    assert await asyncio.wait_for(queue.get(), LOADED) == "x"


async def test_discard_pending_empties_and_releases_join() -> None:
    queue = TrackedQueue()
    for data in ("a", "b"):
        queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data))
    queue.discard_pending()
    assert queue.empty() and queue.size == 0
    await asyncio.wait_for(queue.join(), LOADED)


async def test_an_idle_queue_with_its_writer_waiting_is_much_smaller_than_asyncio_queue() -> None:
    def cost(make: type) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            queues = [make() for _ in range(200)]
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        del queues
        return used / 200

    assert cost(TrackedQueue) * 8 < cost(asyncio.Queue)  # asyncio.Queue: ~3.2 KiB, four deques
