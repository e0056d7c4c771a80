"""What the fan-out keeps per live channel, and the task set its parts spawn into."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..models import Event, PresenceChange
from .ordering import OrderBuffer

PRESENCE_BACKLOG = 10_000  # per channel; beyond it the oldest changes are dropped


@dataclass(slots=True)
class CatchUp:
    """Live events handed off while one connection replays from the store (it is
    not in the channel's room yet, so broadcasts miss it). Past ``limit`` events
    it overflows: the join is refused rather than buffering without bound."""

    limit: int
    events: list[Event] = field(default_factory=list)
    overflow: bool = False

    def add(self, event: Event) -> None:
        if len(self.events) >= self.limit:
            self.overflow = True
        else:
            self.events.append(event)


@dataclass(eq=False, slots=True)
class ChannelState:
    """One channel with local members. ``lock`` is held while events are handed off
    and while a joining connection enters the room, so nothing is broadcast between
    its catch-up and its join; it is never held while waiting on one connection."""

    name: str
    order: OrderBuffer = field(default_factory=OrderBuffer)
    outbox: deque[Event] = field(default_factory=deque)  # released in order, not handed off yet
    delivered_seq: int = 0  # highest seq handed to Delivery.broadcast
    epoch: str = ""  # the history's epoch as last read from the store
    members: set[str] = field(default_factory=set)
    catching_up: dict[str, CatchUp] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # activation finished (or failed)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    closing: bool = False
    pump: asyncio.Task[None] | None = None
    filler: asyncio.Task[None] | None = None
    presence_out: deque[PresenceChange] = field(default_factory=lambda: deque(maxlen=PRESENCE_BACKLOG))
    presence_pump: asyncio.Task[None] | None = None
    behind_at: int | None = None  # store head seen ahead of the order's head at the previous check
    progress: asyncio.Event | None = None  # created by a waiter, set when delivered_seq moves

    @property
    def live(self) -> bool:
        return self.ready.is_set() and not self.closing and not self.failed

    def handed_off(self) -> None:
        """Wake whoever waits for ``delivered_seq`` to move."""
        if self.progress is not None:
            self.progress.set()
            self.progress = None

    async def wait_delivered(self, seq: int) -> None:
        """Return once ``delivered_seq >= seq`` (callers bound it with a timeout)."""
        while self.delivered_seq < seq:
            if self.progress is None:
                self.progress = asyncio.Event()
            await self.progress.wait()

    def cancel_tasks(self) -> None:
        for task in (self.pump, self.filler, self.presence_pump):
            if task is not None:
                task.cancel()


class Tasks:
    """The fan-out's background tasks: spawned here, cancelled and awaited by ``close``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
