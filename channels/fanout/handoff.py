"""Handing a channel's ordered events, and its presence changes, to local connections.

One pump task per channel with something to hand off. An event leaves the outbox
only once ``Delivery.broadcast`` has taken it: a broadcast that raises is counted
(``Telemetry.handoff_failed``), logged once per run of failures, and retried with
capped backoff, so a failing hand-off delays the channel's later events instead
of losing one for every local subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import describe
from ..models import PresenceChange
from ..ports import Delivery
from ..telemetry import Telemetry
from .state import ChannelState

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class HandOff:
    def __init__(
        self,
        delivery: Delivery,
        telemetry: Telemetry,
        spawn: Spawn,
        *,
        retry_delay: float = 0.05,
        max_retry_delay: float = 2.0,
    ) -> None:
        self._delivery = delivery
        self._telemetry = telemetry
        self._spawn = spawn
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay

    def kick(self, state: ChannelState) -> None:
        """Make sure the channel's outbox is being handed off."""
        if state.outbox and state.pump is None and not state.closing:
            state.pump = self._spawn(self._pump(state))

    async def _pump(self, state: ChannelState) -> None:
        delay, failures = self._retry_delay, 0
        try:
            while state.outbox and not state.closing:
                async with state.lock:
                    error = await self._hand_off_outbox(state)
                if error is None:
                    if failures:
                        log.info("hand-off of %s resumed after %d failed attempts", state.name, failures)
                    delay, failures = self._retry_delay, 0
                    continue
                failures += 1
                self._telemetry.handoff_failed()
                if failures == 1:
                    log.error("hand-off of %s#%d to local connections failed (%s); retrying",
                              state.name, state.outbox[0].seq, describe(error), exc_info=error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)
        finally:
            state.pump = None
            self.kick(state)  # events that came in while it was stopping

    async def _hand_off_outbox(self, state: ChannelState) -> Exception | None:
        """Broadcast the outbox in order under the channel's lock; the first failure
        stops it (and is returned) with the failed event still at the front."""
        try:
            while state.outbox:
                event = state.outbox[0]
                try:
                    await self._delivery.broadcast(state.name, event)
                except Exception as exc:
                    return exc
                state.outbox.popleft()
                state.delivered_seq = event.seq
                for catch_up in state.catching_up.values():
                    catch_up.add(event)
                recipients = len(state.members) - len(state.catching_up)
                self._telemetry.delivered(recipients, time.time() - event.ts / 1000)
            return None
        finally:
            state.handed_off()

    # -- presence changes: delivered as they come, outside the seq order ---------

    def offer_presence(self, state: ChannelState, change: PresenceChange) -> None:
        if state.closing:
            return
        state.presence_out.append(change)
        if state.presence_pump is None:
            state.presence_pump = self._spawn(self._pump_presence(state))

    async def _pump_presence(self, state: ChannelState) -> None:
        try:
            while state.presence_out:
                change = state.presence_out.popleft()
                try:
                    await self._delivery.presence(change)
                except Exception:
                    log.exception("presence delivery in %s failed", state.name)
        finally:
            state.presence_pump = None
