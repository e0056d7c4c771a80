"""Which channels are live on this instance, and their members.

A channel is live from its first local member to its last: activation subscribes
its broker channel (first, so anything committed after the head read arrives by
the broker) and starts its order at the store's head; the last member's leave
unsubscribes it and drops its state. Joins racing an activation wait for it; a
join racing a deactivation waits for it to finish and activates afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..errors import AppError, ErrorCode
from ..ports import Broker, Delivery, EventStore
from .state import ChannelState

log = logging.getLogger(__name__)


class LiveChannels:
    def __init__(
        self,
        store: EventStore,
        broker: Broker,
        delivery: Delivery,
        on_started: Callable[[ChannelState], None],
    ) -> None:
        """``on_started``: called once a channel's order has started (events offered
        during activation may be ready for release)."""
        self._store = store
        self._broker = broker
        self._delivery = delivery
        self._on_started = on_started
        self._states: dict[str, ChannelState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, channel: str) -> ChannelState | None:
        return self._states.get(channel)

    def all(self) -> Iterable[ChannelState]:
        return list(self._states.values())

    def clear(self) -> None:
        self._states.clear()

    async def add_member(self, channel: str, conn_id: str) -> ChannelState:
        """Count ``conn_id`` as a member of ``channel``, activating it if needed. A
        member joining again is first taken out of the room (it rejoins after its replay)."""
        state = await self._acquire(channel)
        if conn_id in state.members:
            await self._delivery.leave(conn_id, channel)
        state.members.add(conn_id)
        return state

    async def drop_member(self, state: ChannelState, conn_id: str) -> None:
        """Uncount ``conn_id``; the last member's leave deactivates the channel."""
        state.catching_up.pop(conn_id, None)
        state.members.discard(conn_id)
        await self._delivery.leave(conn_id, state.name)
        if not state.members:
            await self._deactivate(state)

    async def _acquire(self, channel: str) -> ChannelState:
        while True:
            state = self._states.get(channel)
            if state is None:
                return await self._activate(channel)
            if state.closing:
                await state.closed.wait()
                continue
            await state.ready.wait()
            if state.failed:
                raise AppError(ErrorCode.UNAVAILABLE, "channel could not be activated", temporary=True)
            return state

    async def _activate(self, channel: str) -> ChannelState:
        state = ChannelState(channel)
        self._states[channel] = state
        try:
            await self._broker.subscribe(channel)
            # ensure, not bounds: the epoch given to subscribers must be the one of
            # the events they will receive, even for a channel with no history yet
            bounds = await self._store.ensure(channel)
        except BaseException:
            state.failed = True
            state.ready.set()
            self._forget(state)
            await self._unsubscribe_quietly(channel)  # a failed subscribe stays wanted otherwise
            raise
        state.order.start(bounds.head)
        state.delivered_seq = bounds.head
        state.epoch = bounds.epoch
        state.ready.set()
        self._on_started(state)
        return state

    async def _deactivate(self, state: ChannelState) -> None:
        if state.closing:
            return
        state.closing = True
        state.cancel_tasks()
        try:
            await self._unsubscribe_quietly(state.name)
        finally:
            self._forget(state)

    async def _unsubscribe_quietly(self, channel: str) -> None:
        try:
            await self._broker.unsubscribe(channel)
        except Exception:
            log.warning("broker unsubscribe of %s failed", channel, exc_info=True)

    def _forget(self, state: ChannelState) -> None:
        if self._states.get(state.name) is state:
            del self._states[state.name]
        state.closed.set()
