"""Filling a channel's gaps from the store.

The broker may lose messages (a reconnect, a full queue); the store never does.
A gap that persists ``gap_timeout`` (events waiting behind a missing seq), a broker
reconnect, a channel behind the store's head (``positions.py``) or a recovery
waiting for a seq this instance has not delivered yet start one filler task per
channel. It reads forward from the order's head until nothing is missing, and
retries a failing store with capped backoff: a gap left open stalls the channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import AppError, describe
from ..ports import EventStore
from ..telemetry import Telemetry
from .handoff import Spawn
from .state import ChannelState

log = logging.getLogger(__name__)

READ_PAGE = 500


class GapFiller:
    def __init__(
        self,
        store: EventStore,
        telemetry: Telemetry,
        spawn: Spawn,
        release: Callable[[ChannelState], None],
        *,
        gap_timeout: float,
    ) -> None:
        """``release``: hands on what the order buffer can release after a read."""
        self._store = store
        self._telemetry = telemetry
        self._spawn = spawn
        self._release = release
        self._gap_timeout = gap_timeout

    def kick(self, state: ChannelState, *, wait: bool) -> None:
        """Start filling unless a filler runs; ``wait``: only if the gap persists ``gap_timeout``."""
        if state.filler is None and not state.closing:
            state.filler = self._spawn(self._fill(state, wait=wait))

    async def _fill(self, state: ChannelState, *, wait: bool) -> None:
        try:
            if wait:
                await asyncio.sleep(self._gap_timeout)
            delay = 0.05
            while not state.closing:
                try:
                    if not await self._fill_once(state):
                        return
                    delay = 0.05
                except Exception as exc:  # never die: a gap left open stalls the channel
                    self._telemetry.store_failed("read")
                    unexpected = not isinstance(exc, AppError)
                    log.log(logging.ERROR if unexpected else logging.WARNING,
                            "gap fill of %s failed (%s); retrying in %.2fs", state.name, describe(exc), delay,
                            exc_info=unexpected)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            state.filler = None
            if state.order.has_gap:
                self.kick(state, wait=True)

    async def _fill_once(self, state: ChannelState) -> bool:
        """One page from the store after the order's head; True while there is more to read."""
        order = state.order
        after = order.head
        # an event already waiting was committed before this read's snapshot, so
        # every seq below it is visible to the read; events arriving during the
        # read prove nothing about what the read could see
        before = order.first_waiting()
        page = await self._store.read(state.name, after=after, before=before, limit=READ_PAGE)
        filled = 0
        for event in page:  # the broker may have moved the head on meanwhile: old ones drop
            filled += order.offer(event)
        if filled:
            self._telemetry.gap_filled(filled)
        if before is not None and order.head == after and (not page or page[0].seq != after + 1):
            # visible to the read yet absent: retention removed them, nothing brings them back
            log.warning("events %d..%d of %s are no longer stored; skipping", after + 1, before - 1, state.name)
            order.skip_to(before - 1)
        self._release(state)
        return len(page) == READ_PAGE or order.has_gap
