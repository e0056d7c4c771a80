"""The periodic position check: what no later event would reveal.

A lost broker message of a channel's latest event leaves no gap behind it until
the next event comes. Every ``interval`` the heads of all live channels are read
from the store in pages; a channel behind the store's head on two checks in a row
(not just an event in flight) is filled from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..errors import describe
from ..ports import EventStore
from .gapfill import READ_PAGE, GapFiller
from .state import ChannelState

log = logging.getLogger(__name__)


class PositionCheck:
    def __init__(
        self, store: EventStore, channels: Callable[[], Iterable[ChannelState]], filler: GapFiller, *, interval: float
    ) -> None:
        self._store = store
        self._channels = channels
        self._filler = filler
        self.interval = interval

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> None:
        states = [s for s in self._channels() if s.live]
        for start in range(0, len(states), READ_PAGE):
            chunk = states[start : start + READ_PAGE]
            try:
                heads = await self._store.heads([s.name for s in chunk])
            except Exception as exc:
                log.warning("position check of %d channels failed: %s", len(chunk), describe(exc))
                continue
            for state in chunk:
                self._compare(state, heads.get(state.name, 0))

    def _compare(self, state: ChannelState, head: int) -> None:
        seen = state.order.head
        if head <= seen:
            state.behind_at = None
            return
        if state.behind_at is not None and seen < state.behind_at and state.filler is None:
            log.info("%s is behind the store (%d < %d): filling", state.name, seen, state.behind_at)
            self._filler.kick(state, wait=False)
        state.behind_at = head
