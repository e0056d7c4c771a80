"""Engine.IO's per-socket send queue, small enough to keep one per idle connection.

engineio gives every socket an ``asyncio.Queue``: four deques (items, getters,
putters, and the ``join`` event's waiters) of one 512-byte block each, about
3.2 KiB per connection before anything is queued. This queue has the same
behaviour for what engineio and the delivery path use (``put``/``put_nowait``,
``get``/``get_nowait``, ``task_done``/``join``, ``empty``/``qsize``; unbounded)
and allocates its lists only while something waits in them, which for an idle
connection is the one getter (engineio's writer) and nothing else.

It also counts the characters it holds (``size``) for the per-socket send bound.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _packet_size(pkt: Any) -> int:
    data = getattr(pkt, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 0


class TrackedQueue:
    """An unbounded FIFO with ``asyncio.Queue``'s interface and wake-up rules."""

    __slots__ = ("_getters", "_head", "_items", "_joiners", "_unfinished", "size")

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize:
            raise ValueError("a send queue is unbounded: the send bound is enforced by the delivery path")
        self._items: list[Any] = []
        self._head = 0  # items before it were taken: popping from the front of a list is O(n)
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self.size = 0

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head == len(self._items)

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self.size += _packet_size(item)
        self._unfinished += 1
        self._wake_getter()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        items = self._items
        if self._head == len(items):
            raise asyncio.QueueEmpty
        item = items[self._head]
        if self._head + 1 == len(items):
            self._items, self._head = [], 0  # drained: let the list's storage go
        else:
            items[self._head] = None
            self._head += 1
        self.size -= _packet_size(item)
        return item

    async def get(self) -> Any:
        while self.empty():
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                self._forget_getter(getter)
                if not self.empty() and not getter.cancelled():
                    self._wake_getter()  # it was woken for an item it will not take: pass it on
                raise
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners is not None:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished > 0:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner

    def discard_pending(self) -> None:
        """Drop what has not been written yet (the connection is being cut off)."""
        while not self.empty():
            self.get_nowait()
            self.task_done()

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None

    def _forget_getter(self, getter: asyncio.Future[None]) -> None:
        if self._getters is not None and getter in self._getters:
            self._getters.remove(getter)
            if not self._getters:
                self._getters = None
