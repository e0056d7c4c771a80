"""One timer for many deadlines of the same length.

When every item waits the same ``delay``, items fall due in the order they were
added: a FIFO and one loop timer for its head replace a timer (or a sleeping
task) per item. The Engine.IO pings and the handshake deadlines are such queues.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FifoTimer(Generic[T]):
    """Calls ``fire(item)`` ``delay`` seconds after ``add(item)``, in the order added.
    An item cannot be withdrawn: ``fire`` decides whether it still matters."""

    def __init__(self, delay: float, fire: Callable[[T], None]) -> None:
        self.delay = delay
        self._fire_item = fire
        self._due: deque[tuple[float, T]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self.delay, item))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            self._fire_item(due.popleft()[1])
        if due:
            self._timer = loop.call_at(due[0][0], self._fire)

    def close(self) -> None:
        """Drop every pending item; none fires."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
