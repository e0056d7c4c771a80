"""Per-channel ordered delivery to this instance's connections.

Events reach a channel's state from two sides: the local group-commit writer
(``on_local_commit``) and the broker (``on_message``: events committed by any
instance, this one included). Both are offered to the channel's ordering
buffer, which hands them on strictly in ``seq`` order, drops duplicates, and
fills a gap from the store when it persists longer than ``gap_timeout``.

Recovery: a connection joining with ``since`` is replayed ``(since, target]``
from the store, where ``target`` is the last seq broadcast when it registered;
events broadcast meanwhile are buffered for it and flushed under the channel
lock together with the join, so no live event slips between replay and live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .errors import AppError, ErrorCode
from .models import Event, PresenceChange
from .ports import Broker, BrokerListener, Delivery, EventStore
from .telemetry import NullTelemetry, Telemetry

log = logging.getLogger(__name__)

READ_PAGE = 500
CATCH_UP_TIMEOUT = 5.0
PRESENCE_BACKLOG = 10_000  # per channel; beyond it the oldest changes are dropped


@dataclass(frozen=True, slots=True)
class JoinResult:
    """``head``: the last seq this connection has been sent (replayed or live) at the
    switch-over; every later event reaches it live. ``recovered``: ``since`` could be
    served from the store (False: the client must sync over REST). ``epoch``: the
    history ``head`` and the live seqs belong to (``ChannelBounds.epoch``)."""

    head: int
    recovered: bool
    epoch: str = ""


@dataclass(slots=True)
class _CatchUp:
    events: list[Event] = field(default_factory=list)
    overflow: bool = False


@dataclass(eq=False, slots=True)
class _ChannelState:
    name: str
    last_seq: int = -1  # highest seq queued for broadcast; -1 until activated
    epoch: str = ""  # the history's epoch as last read from the store
    delivered_seq: int = 0  # highest seq handed to Delivery.broadcast
    pending: dict[int, Event] = field(default_factory=dict)
    outbox: deque[Event] = field(default_factory=deque)
    members: set[str] = field(default_factory=set)
    catching_up: dict[str, _CatchUp] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    closing: bool = False
    pump: asyncio.Task[None] | None = None
    filler: asyncio.Task[None] | None = None
    presence_out: deque[PresenceChange] = field(default_factory=lambda: deque(maxlen=PRESENCE_BACKLOG))
    presence_pump: asyncio.Task[None] | None = None
    behind_at: int | None = None  # store head seen ahead of last_seq at the previous check


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
        self._store = store
        self._broker = broker
        self._delivery = delivery
        self._gap_timeout = gap_timeout
        self._recovery_max = recovery_max_events
        self._catch_up_limit = catch_up_limit
        self._check_interval = position_check_interval
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self._states: dict[str, _ChannelState] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- queries ---------------------------------------------------------

    def live_channels(self) -> int:
        return len(self._states)

    def members(self, channel: str) -> int:
        state = self._states.get(channel)
        return len(state.members) if state else 0

    # -- joining and leaving ----------------------------------------------

    async def join(
        self, conn_id: str, channel: str, since: int | None = None, epoch: str | None = None
    ) -> JoinResult:
        """Make ``conn_id`` receive ``channel`` live, after replaying ``(since, head]``
        when ``(epoch, since)`` is a recoverable position (``ChannelBounds.can_recover``)."""
        state = await self._acquire(channel)
        if conn_id in state.members:
            await self._delivery.leave(conn_id, channel)
        state.members.add(conn_id)
        try:
            if since is None:
                async with state.lock:
                    await self._delivery.join(conn_id, channel)
                    return JoinResult(state.delivered_seq, True, state.epoch)
            return await self._recover(state, conn_id, since, epoch)
        except BaseException:
            state.catching_up.pop(conn_id, None)
            await self._drop_member(state, conn_id)
            raise

    async def leave(self, conn_id: str, channel: str) -> bool:
        """Stop delivering ``channel`` to ``conn_id``; False if it was not a member."""
        state = self._states.get(channel)
        if state is None or conn_id not in state.members:
            return False
        state.catching_up.pop(conn_id, None)
        await self._drop_member(state, conn_id)
        return True

    async def _drop_member(self, state: _ChannelState, conn_id: str) -> None:
        state.members.discard(conn_id)
        await self._delivery.leave(conn_id, state.name)
        if not state.members:
            await self._deactivate(state)

    async def _acquire(self, channel: str) -> _ChannelState:
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

    async def _activate(self, channel: str) -> _ChannelState:
        state = _ChannelState(channel)
        self._states[channel] = state
        try:
            # subscribe first: anything committed after the head read arrives by the broker
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
        state.last_seq = state.delivered_seq = bounds.head
        state.epoch = bounds.epoch
        state.ready.set()
        self._advance(state)
        return state

    async def _deactivate(self, state: _ChannelState) -> None:
        if state.closing:
            return
        state.closing = True
        for task in (state.pump, state.filler, state.presence_pump):
            if task is not None:
                task.cancel()
        try:
            await self._unsubscribe_quietly(state.name)
        finally:
            self._forget(state)

    async def _unsubscribe_quietly(self, channel: str) -> None:
        try:
            await self._broker.unsubscribe(channel)
        except Exception:
            log.warning("broker unsubscribe of %s failed", channel, exc_info=True)

    def _forget(self, state: _ChannelState) -> None:
        if self._states.get(state.name) is state:
            del self._states[state.name]
        state.closed.set()

    # -- recovery ---------------------------------------------------------

    async def _recover(self, state: _ChannelState, conn_id: str, since: int, epoch: str | None) -> JoinResult:
        catch_up = state.catching_up[conn_id] = _CatchUp()
        target = state.delivered_seq
        bounds = await self._store.bounds(state.name)
        state.epoch = bounds.epoch  # fresher than activation's: an operator may have reset it
        recovered = bounds.can_recover(since, epoch) and target - since <= self._recovery_max
        if recovered:
            recovered = await self._replay(state.name, conn_id, since, target)
        floor = max(since, target) if recovered else target
        if recovered and since > target:
            await self._catch_up_to(state, since)
        async with state.lock:
            state.catching_up.pop(conn_id, None)
            if catch_up.overflow:
                raise AppError(ErrorCode.UNAVAILABLE, "channel too busy to recover; retry", temporary=True)
            for event in catch_up.events:
                if event.seq > floor:
                    await self._delivery.send(conn_id, event)
            await self._delivery.join(conn_id, state.name)
            return JoinResult(state.delivered_seq, recovered, bounds.epoch)

    async def _catch_up_to(self, state: _ChannelState, seq: int) -> None:
        """The client saw ``seq`` on another instance before this one delivered it: it
        may join the room only once this instance's broadcasts are past ``seq``."""
        deadline = asyncio.get_running_loop().time() + CATCH_UP_TIMEOUT
        while state.delivered_seq < seq:
            if asyncio.get_running_loop().time() > deadline:
                raise AppError(ErrorCode.UNAVAILABLE, "channel is behind; retry", temporary=True)
            if state.filler is None:
                state.filler = self._spawn(self._fill(state, wait=False))
            await asyncio.sleep(0.005)

    async def _replay(self, channel: str, conn_id: str, after: int, target: int) -> bool:
        """Send ``(after, target]`` from the store; False if retention removed part of it."""
        while after < target:
            page = await self._store.read(
                channel, after=after, before=target + 1, limit=min(READ_PAGE, target - after)
            )
            if not page or page[0].seq != after + 1:
                return False
            for event in page:
                await self._delivery.send(conn_id, event)
            after = page[-1].seq
        return True

    # -- events in ----------------------------------------------------------

    def on_local_commit(self, events: Sequence[Event]) -> None:
        """Events this instance just committed (the writer's on_commit hook)."""
        for event in events:
            state = self._states.get(event.channel)
            if state is not None:
                self._offer(state, event)

    def on_message(self, channel: str, payload: bytes) -> None:
        state = self._states.get(channel)
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
            self._offer_presence(state, message)
        else:
            self._offer(state, message)

    def on_resubscribed(self) -> None:
        """Messages may have been lost while the broker was away: read what we missed."""
        self._telemetry.broker_resumed()
        for state in list(self._states.values()):
            if state.ready.is_set() and not state.closing and state.filler is None:
                state.filler = self._spawn(self._fill(state, wait=False))

    def _offer(self, state: _ChannelState, event: Event) -> None:
        if state.closing or event.seq <= state.last_seq:
            return
        state.pending[event.seq] = event
        if state.last_seq >= 0:
            self._advance(state)

    def _advance(self, state: _ChannelState) -> None:
        for seq in [s for s in state.pending if s <= state.last_seq]:
            del state.pending[seq]
        while (event := state.pending.pop(state.last_seq + 1, None)) is not None:
            state.last_seq = event.seq
            state.outbox.append(event)
        if state.outbox and state.pump is None:
            state.pump = self._spawn(self._pump(state))
        if state.pending and state.filler is None:
            state.filler = self._spawn(self._fill(state, wait=True))

    # -- events out ---------------------------------------------------------

    async def _pump(self, state: _ChannelState) -> None:
        try:
            async with state.lock:
                while state.outbox:
                    event = state.outbox.popleft()
                    # mark before the await: a recovery registering meanwhile must see it as sent
                    state.delivered_seq = event.seq
                    self._buffer_for_catch_up(state, event)
                    try:
                        await self._delivery.broadcast(state.name, event)
                    except Exception:
                        log.exception("broadcast of %s#%d failed", state.name, event.seq)
                        continue
                    recipients = len(state.members) - len(state.catching_up)
                    self._telemetry.delivered(recipients, time.time() - event.ts / 1000)
        finally:
            state.pump = None
            if state.outbox and not state.closing:
                state.pump = self._spawn(self._pump(state))

    def _buffer_for_catch_up(self, state: _ChannelState, event: Event) -> None:
        for catch_up in state.catching_up.values():
            if len(catch_up.events) >= self._catch_up_limit:
                catch_up.overflow = True
            else:
                catch_up.events.append(event)

    async def _fill(self, state: _ChannelState, *, wait: bool) -> None:
        """Read missing events from the store until the channel has no gap."""
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
                            "gap fill of %s failed (%s); retrying in %.2fs", state.name, exc, delay,
                            exc_info=unexpected)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            state.filler = None
            if state.pending and not state.closing:
                state.filler = self._spawn(self._fill(state, wait=True))

    async def _fill_once(self, state: _ChannelState) -> bool:
        """One page from the store after ``last_seq``; True while there is more to read."""
        after = state.last_seq
        # an event already pending was committed before this read's snapshot, so
        # every seq below it is visible to the read; events arriving during the
        # read prove nothing about what the read could see
        before = min(state.pending, default=None)
        page = await self._store.read(state.name, after=after, before=before, limit=READ_PAGE)
        filled = 0
        for event in page:  # the broker may have moved last_seq on meanwhile: old ones drop
            filled += event.seq > state.last_seq
            self._offer(state, event)
        if filled:
            self._telemetry.gap_filled(filled)
        if before is not None and state.last_seq == after and (not page or page[0].seq != after + 1):
            # visible to the read yet absent: retention removed them, nothing brings them back
            log.warning("events %d..%d of %s are no longer stored; skipping", after + 1, before - 1, state.name)
            state.last_seq = before - 1
        self._advance(state)
        return len(page) == READ_PAGE or bool(state.pending)

    # -- presence changes: delivered as they come, outside the seq order ---------

    def _offer_presence(self, state: _ChannelState, change: PresenceChange) -> None:
        if state.closing:
            return
        state.presence_out.append(change)
        if state.presence_pump is None:
            state.presence_pump = self._spawn(self._pump_presence(state))

    async def _pump_presence(self, state: _ChannelState) -> None:
        try:
            while state.presence_out:
                change = state.presence_out.popleft()
                try:
                    await self._delivery.presence(change)
                except Exception:
                    log.exception("presence delivery in %s failed", state.name)
        finally:
            state.presence_pump = None

    # -- position checks ------------------------------------------------------

    async def _check_positions(self) -> None:
        """Catch what no later event would reveal: the lost broker message of a
        channel's latest event. A channel behind the store's head on two checks in
        a row (not just an event in flight) is filled from the store."""
        while True:
            await asyncio.sleep(self._check_interval)
            states = [s for s in self._states.values() if s.ready.is_set() and not s.closing]
            for start in range(0, len(states), READ_PAGE):
                chunk = states[start : start + READ_PAGE]
                try:
                    heads = await self._store.heads([s.name for s in chunk])
                except Exception as exc:
                    log.warning("position check failed: %s", exc)
                    continue
                for state in chunk:
                    self._compare_position(state, heads.get(state.name, 0))

    def _compare_position(self, state: _ChannelState, head: int) -> None:
        if head <= state.last_seq:
            state.behind_at = None
            return
        if state.behind_at is not None and state.last_seq < state.behind_at and state.filler is None:
            log.info("%s is behind the store (%d < %d): filling", state.name, state.last_seq, state.behind_at)
            state.filler = self._spawn(self._fill(state, wait=False))
        state.behind_at = head

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic position check (cancelled by ``close``)."""
        if self._check_interval > 0:
            self._spawn(self._check_positions())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel and await every background task; the broker is closed by its owner."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._states.clear()
