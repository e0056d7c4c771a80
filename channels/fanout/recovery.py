"""Joining a channel's room, with recovery from ``since``.

A connection joining with ``since`` registers for catch-up under the channel's
lock, at ``target``, the last seq handed off; every later hand-off is buffered
for it. It is replayed ``(since, target]`` from the store, then the buffered
events, and enters the room under the lock together with the last of them: no
live event slips between replay and live, and none comes twice.

Every send to the joining connection is paced by it (``Delivery.writable``):
waiting happens outside the lock, on that connection only, for at most the
delivery's time bound; a connection that does not make room is cut off by the
delivery and its join fails. Only a short tail of buffered events is sent under
the lock, without waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..errors import AppError, ErrorCode
from ..models import ChannelBounds, Event
from ..ports import Delivery, EventStore
from .gapfill import READ_PAGE, GapFiller
from .state import CatchUp, ChannelState

CATCH_UP_TIMEOUT = 5.0  # how long a join waits for this instance to deliver what the client saw elsewhere
TAIL_UNDER_LOCK = 64  # buffered events left for the switch-over under the lock; the rest are sent paced


@dataclass(frozen=True, slots=True)
class JoinResult:
    """``head``: the last seq this connection has been sent (replayed or live) at the
    switch-over; every later event reaches it live. ``recovered``: ``since`` could be
    served from the store (False: the client must sync over REST). ``epoch``: the
    history ``head`` and the live seqs belong to (``ChannelBounds.epoch``)."""

    head: int
    recovered: bool
    epoch: str = ""


def can_recover(
    bounds: ChannelBounds, since: int, epoch: str | None, target: int, max_events: int
) -> bool:
    """Whether the position ``(epoch, since)`` is served from the store: it belongs to
    this history (``ChannelBounds.can_recover``), retention still holds every event
    after it, and at most ``max_events`` lie between it and ``target`` (the last seq
    handed off on this instance). The one place that judges a position."""
    return bounds.can_recover(since, epoch) and target - since <= max_events


class _Gone(AppError):
    def __init__(self) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, "connection closed or too slow to recover", temporary=True)


class Recovery:
    def __init__(
        self, store: EventStore, delivery: Delivery, filler: GapFiller, *, max_events: int, catch_up_limit: int
    ) -> None:
        self._store = store
        self._delivery = delivery
        self._filler = filler
        self._max_events = max_events
        self._catch_up_limit = catch_up_limit

    async def join(
        self, state: ChannelState, conn_id: str, since: int | None, epoch: str | None = None
    ) -> JoinResult:
        """Put ``conn_id`` (already a member) in the room, after replaying ``(since, head]``
        when ``(epoch, since)`` is a recoverable position."""
        if since is None:
            async with state.lock:
                await self._delivery.join(conn_id, state.name)
                return JoinResult(state.delivered_seq, True, state.epoch)
        async with state.lock:  # between two hand-offs: every later one is buffered for it
            target = state.delivered_seq
            catch_up = state.catching_up[conn_id] = CatchUp(self._catch_up_limit)
        try:
            bounds = await self._store.bounds(state.name)
            state.epoch = bounds.epoch  # fresher than activation's: an operator may have reset it
            recovered = can_recover(bounds, since, epoch, target, self._max_events)
            if recovered:
                recovered = await self._replay(state.name, conn_id, since, target)
            floor = max(since, target) if recovered else target
            if recovered and since > target:
                await self._delivered_past(state, since)
            floor = await self._send_buffered(conn_id, catch_up, floor)
            async with state.lock:
                state.catching_up.pop(conn_id, None)
                if catch_up.overflow:
                    raise AppError(ErrorCode.UNAVAILABLE, "channel too busy to recover; retry", temporary=True)
                for event in catch_up.events:
                    if event.seq > floor:
                        await self._delivery.send(conn_id, event)
                await self._delivery.join(conn_id, state.name)
                return JoinResult(state.delivered_seq, recovered, bounds.epoch)
        finally:
            state.catching_up.pop(conn_id, None)

    async def _replay(self, channel: str, conn_id: str, after: int, target: int) -> bool:
        """Send ``(after, target]`` from the store; False if retention removed part of it."""
        while after < target:
            page = await self._store.read(channel, after=after, before=target + 1, limit=min(READ_PAGE, target - after))
            if not page or page[0].seq != after + 1:
                return False
            for event in page:
                await self._send_paced(conn_id, event)
            after = page[-1].seq
        return True

    async def _delivered_past(self, state: ChannelState, seq: int) -> None:
        """The client saw ``seq`` on another instance before this one delivered it: it
        may join the room only once this instance's hand-offs are past ``seq``."""
        self._filler.kick(state, wait=False)
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT):
                await state.wait_delivered(seq)
        except TimeoutError:
            raise AppError(ErrorCode.UNAVAILABLE, "channel is behind; retry", temporary=True) from None

    async def _send_buffered(self, conn_id: str, catch_up: CatchUp, floor: int) -> int:
        """Send what was buffered during the replay, paced, until a short tail is
        left for the switch-over; returns the last seq sent."""
        while True:
            if not await self._delivery.writable(conn_id):
                raise _Gone()
            if catch_up.overflow or len(catch_up.events) <= TAIL_UNDER_LOCK:
                return floor
            events, catch_up.events = catch_up.events, []
            for event in events:
                if event.seq > floor:
                    await self._send_paced(conn_id, event)
                    floor = event.seq

    async def _send_paced(self, conn_id: str, event: Event) -> None:
        if not await self._delivery.writable(conn_id):
            raise _Gone()
        await self._delivery.send(conn_id, event)
