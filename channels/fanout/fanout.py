"""``Fanout``: per-channel ordered delivery to this instance's connections.

Events reach a live channel from two sides: the local group-commit writer
(``on_local_commit``) and the broker (``on_message``: events committed by any
instance, this one included). Both go through the channel's order buffer
(``ordering.py``), which releases them strictly in ``seq`` order without
duplicates into the hand-off (``handoff.py``); a persisting gap is filled from
the store (``gapfill.py``, ``positions.py``). Joining, with recovery from
``since``, is ``recovery.py``; which channels are live is ``activation.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import codec
from ..models import Event, PresenceChange
from ..ports import Broker, BrokerListener, Delivery, EventStore
from ..telemetry import NullTelemetry, Telemetry
from .activation import LiveChannels
from .gapfill import GapFiller
from .handoff import HandOff
from .positions import PositionCheck
from .recovery import JoinResult, Recovery
from .state import ChannelState, Tasks

log = logging.getLogger(__name__)


class Fanout(BrokerListener):
    """Owns the live channels of this instance: broker subscriptions, order, recovery."""

    def __init__(
        self,
        store: EventStore,
        broker: Broker,
        delivery: Delivery,
        *,
        gap_timeout: float = 0.04,
        recovery_max_events: int = 10_000,
        catch_up_limit: int = 10_000,
        position_check_interval: float = 5.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        telemetry = telemetry or NullTelemetry()
        self._telemetry = telemetry
        self._tasks = Tasks()
        self._channels = LiveChannels(store, broker, delivery, on_started=self._release)
        self._handoff = HandOff(delivery, telemetry, self._tasks.spawn)
        self._filler = GapFiller(store, telemetry, self._tasks.spawn, self._release, gap_timeout=gap_timeout)
        self._positions = PositionCheck(store, self._channels.all, self._filler, interval=position_check_interval)
        self._recovery = Recovery(store, delivery, self._filler, max_events=recovery_max_events,
                                  catch_up_limit=catch_up_limit)

    # -- queries ---------------------------------------------------------

    def live_channels(self) -> int:
        return len(self._channels)

    def members(self, channel: str) -> int:
        state = self._channels.get(channel)
        return len(state.members) if state else 0

    # -- joining and leaving ----------------------------------------------

    async def join(
        self, conn_id: str, channel: str, since: int | None = None, epoch: str | None = None
    ) -> JoinResult:
        """Make ``conn_id`` receive ``channel`` live, after replaying ``(since, head]``
        when ``(epoch, since)`` is a recoverable position (``ChannelBounds.can_recover``).
        Raises ``AppError`` (nothing joined) when the channel cannot be activated, the
        connection does not keep up with its replay, or the channel is too busy."""
        state = await self._channels.add_member(channel, conn_id)
        try:
            return await self._recovery.join(state, conn_id, since, epoch)
        except BaseException:
            await self._channels.drop_member(state, conn_id)
            raise

    async def leave(self, conn_id: str, channel: str) -> bool:
        """Stop delivering ``channel`` to ``conn_id``; False if it was not a member."""
        state = self._channels.get(channel)
        if state is None or conn_id not in state.members:
            return False
        await self._channels.drop_member(state, conn_id)
        return True

    # -- events in ----------------------------------------------------------

    def on_local_commit(self, events: Sequence[Event]) -> None:
        """Events this instance just committed (see ``commit.py``)."""
        for event in events:
            state = self._channels.get(event.channel)
            if state is not None:
                self._offer(state, event)

    def on_message(self, channel: str, payload: bytes) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        try:
            message = codec.decode_message(payload)
        except ValueError:
            log.warning("dropping malformed broker message on %s", channel)
            return
        if message.channel != channel:
            log.warning("dropping broker message for %s received on %s", message.channel, channel)
            return
        if isinstance(message, PresenceChange):
            self._handoff.offer_presence(state, message)
        else:
            self._offer(state, message)

    def on_resubscribed(self) -> None:
        """Messages may have been lost while the broker was away: read what we missed."""
        self._telemetry.broker_resumed()
        for state in self._channels.all():
            if state.live:
                self._filler.kick(state, wait=False)

    def _offer(self, state: ChannelState, event: Event) -> None:
        if not state.closing and state.order.offer(event):
            self._release(state)

    def _release(self, state: ChannelState) -> None:
        """Move what the order buffer releases to the hand-off; a gap starts the filler."""
        state.outbox.extend(state.order.take())
        self._handoff.kick(state)
        if state.order.has_gap:
            self._filler.kick(state, wait=True)

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic position check (cancelled by ``close``)."""
        if self._positions.interval > 0:
            self._tasks.spawn(self._positions.run())

    async def close(self) -> None:
        """Cancel and await every background task; the broker is closed by its owner."""
        await self._tasks.close()
        self._channels.clear()
