"""The use cases both transports call: publish, subscribe, history, sync, presence.

Inputs arrive shape-validated (handlers/schemas.py); this layer checks channel
names, authorization and limits, and talks to the writer, store and fan-out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import authz, codec
from .errors import AppError, ErrorCode
from .fanout import Fanout, JoinResult
from .models import MAX_SEQ, Appended, Event, JsonObject, NewEvent, PresenceMember, Principal
from .names import namespace_of, validate_channel
from .namespaces import NamespaceRules
from .ports import EventStore
from .presence.tracker import PresenceTracker
from .store.writer import GroupCommitWriter, check_storable
from .telemetry import NullTelemetry, Telemetry

HISTORY_READ_BYTES = 2 << 20  # most event bytes one store read of a history page may load


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Read-side limits (documented in the README's configuration table)."""

    history_max_limit: int = 1000
    history_max_bytes: int = 512 * 1024  # of one page's events, as JSON
    sync_max_channels: int = 100
    sync_max_events: int = 1000
    batch_max_events: int = 500


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """``head``: last committed seq; ``first``: lowest retained seq; ``next_after``:
    cursor for the next page (``None`` when this page reaches the head); ``epoch``:
    the history these seqs belong to (a page with another epoch than the previous
    page's is from another history: start over). A page stops early at
    ``history_max_bytes`` (never before its first event)."""

    events: list[Event]
    head: int
    first: int
    next_after: int | None
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Events after the client's position. ``recovered`` False: the position is older
    than retention, ahead of the head, or from another epoch, and ``events`` starts
    at the oldest kept; ``has_more``: call again with the last seq (and ``epoch``)
    to continue."""

    events: list[Event]
    head: int
    recovered: bool
    has_more: bool
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """``subscribers``: connections subscribed on every instance; ``users``: distinct users among them."""

    channel: str
    head: int
    first: int
    subscribers: int
    users: int


@dataclass(frozen=True, slots=True)
class BatchItem:
    channel: str
    type: str
    data: JsonObject
    client_msg_id: str | None = None


class ChannelService:
    def __init__(
        self,
        store: EventStore,
        writer: GroupCommitWriter,
        fanout: Fanout,
        rules: NamespaceRules,
        presence: PresenceTracker,
        limits: ServiceLimits | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._fanout = fanout
        self._rules = rules
        self._presence = presence
        self.limits = limits or ServiceLimits()
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self.draining = False

    def publish(
        self,
        principal: Principal,
        channel: str,
        type: str,
        data: JsonObject,
        client_msg_id: str | None = None,
        *,
        via: str = "socket",
    ) -> asyncio.Future[Appended]:
        """Durable publish: the event is checked and queued for commit now (refusals
        raise ``AppError`` here, before anything awaits, so one caller's publishes
        commit in call order), and the returned future resolves with the stored event
        once it is committed (or with the writer's error). A plain function rather
        than a coroutine, so that callers can pipeline publishes without a task each;
        ``await service.publish(...)`` waits for the commit."""
        started = time.perf_counter()
        try:
            item, encoded = self._checked(principal, channel, type, data, client_msg_id)
            future = self._writer.enqueue(item, encoded=encoded)
        except AppError as exc:
            self._telemetry.published(via, exc.code.value, time.perf_counter() - started)
            raise
        except Exception:
            self._telemetry.published(via, "internal", time.perf_counter() - started)
            raise
        future.add_done_callback(lambda done: self._count(via, done, started))
        return future

    def _count(self, via: str, done: asyncio.Future[Appended], started: float) -> None:
        if done.cancelled():
            outcome = "cancelled"
        elif (exc := done.exception()) is not None:
            outcome = exc.code.value if isinstance(exc, AppError) else "internal"
        else:
            outcome = "duplicate" if done.result().duplicate else "ok"
        self._telemetry.published(via, outcome, time.perf_counter() - started)

    def _checked(
        self, principal: Principal, channel: str, type: str, data: JsonObject, client_msg_id: str | None
    ) -> tuple[NewEvent, bytes]:
        """The event to submit and ``data`` as JSON (the writer's storability check reuses it)."""
        if self.draining:
            raise AppError(ErrorCode.UNAVAILABLE, "this instance is shutting down; reconnect and retry",
                           temporary=True)
        validate_channel(channel)
        options = self._rules.for_channel(channel)
        authz.require_publish(principal, channel, options)
        encoded = codec.encode_data(data)
        size = len(encoded)
        if size > options.max_payload_bytes:
            raise AppError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"data is {size} bytes; the limit in this namespace is {options.max_payload_bytes}",
            )
        return NewEvent(channel, type, data, principal.sub, client_msg_id), encoded

    async def publish_batch(
        self, principal: Principal, items: Sequence[BatchItem]
    ) -> list[Appended | AppError]:
        """Publish many events, to any channels, in one call; each is durable and
        ordered like a single publish (submitted in list order). Every item is
        checked first: one bad item refuses the batch (``AppError`` naming its
        index) and nothing is stored. Results are aligned with ``items``; an item
        can still fail alone (e.g. ``unavailable`` when the store fails mid-batch)."""
        if not 1 <= len(items) <= self.limits.batch_max_events:
            raise AppError(ErrorCode.BAD_REQUEST, f"a batch holds 1 to {self.limits.batch_max_events} events")
        checked = []
        for index, it in enumerate(items):
            try:
                item, encoded = self._checked(principal, it.channel, it.type, it.data, it.client_msg_id)
                # the writer would refuse it too, but only once the items before it are queued
                check_storable(item, encoded)
                checked.append((item, encoded))
            except AppError as exc:
                raise AppError(exc.code, f"events[{index}]: {exc.message}") from None
        # gather starts the submits in list order; each queues before its first await
        started = time.perf_counter()
        results = await asyncio.gather(*(self._writer.submit(item, encoded=encoded) for item, encoded in checked),
                                       return_exceptions=True)
        outcomes = [_as_result(r) for r in results]
        elapsed = time.perf_counter() - started
        for outcome in outcomes:
            label = outcome.code.value if isinstance(outcome, AppError) else "duplicate" if outcome.duplicate else "ok"
            self._telemetry.published("batch", label, elapsed)
        return outcomes

    async def subscribe(
        self,
        principal: Principal,
        conn_id: str,
        channel: str,
        since: int | None = None,
        epoch: str | None = None,
    ) -> JoinResult:
        """Join ``channel`` live, recovering from the position ``(epoch, since)`` when given."""
        validate_channel(channel)
        authz.require_read(principal, channel)
        result = await self._fanout.join(conn_id, channel, since, epoch)
        await self._presence.joined(principal, conn_id, channel)
        return result

    async def unsubscribe(self, principal: Principal, conn_id: str, channel: str) -> None:
        validate_channel(channel)
        if not await self._fanout.leave(conn_id, channel):
            raise AppError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {channel}")
        await self._presence.left(principal, conn_id, channel)

    async def open_connection(self, principal: Principal, conn_id: str, *, max_per_user: int) -> None:
        """Admit a connection: ``too_many_connections`` when its user holds ``max_per_user``
        on all instances together (0: no limit)."""
        await self._presence.connect(principal, conn_id, max_per_user)

    async def drop_connection(self, principal: Principal, conn_id: str, channels: list[str]) -> None:
        """Leave ``channels`` (the connection went away, or a subscribe was undone)."""
        for channel in channels:
            if await self._fanout.leave(conn_id, channel):
                await self._presence.left(principal, conn_id, channel)

    async def close_connection(self, principal: Principal, conn_id: str, channels: list[str]) -> None:
        """A connection went away: leave everything it had joined and uncount it."""
        await self.drop_connection(principal, conn_id, channels)
        await self._presence.disconnect(principal, conn_id)

    async def presence(
        self, principal: Principal, channel: str, *, off: ErrorCode = ErrorCode.BAD_REQUEST
    ) -> list[PresenceMember]:
        """Members of ``channel`` across instances (readers only). Where presence is off
        in the channel's namespace the call fails with ``off``, after the name and the
        read access are checked: ``bad_request`` on a socket, ``not_found`` over REST,
        where the channel simply has no presence resource."""
        validate_channel(channel)
        authz.require_read(principal, channel)
        if not self._presence.enabled(channel):
            raise AppError(off, f"presence is off in namespace '{namespace_of(channel)}'")
        return await self._presence.members(channel)

    async def stats(self, principal: Principal, channel: str) -> ChannelStats:
        """Head, first retained seq and subscribers of ``channel`` (server tokens only)."""
        validate_channel(channel)
        if not principal.is_server:
            raise AppError(ErrorCode.PERMISSION_DENIED, "channel stats need a server token")
        bounds = await self._store.bounds(channel)
        counts = await self._presence.stats(channel)
        return ChannelStats(channel, bounds.head, bounds.first, counts.connections, counts.users)

    async def history(
        self,
        principal: Principal,
        channel: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """``after`` given: the oldest ``limit`` events after it (paging forward);
        otherwise the newest ``limit`` events (before ``before`` when given). Either
        way the page holds at most ``history_max_bytes`` of events (at least one):
        forward, ``next_after`` continues it; newest-first, it keeps the newest
        events and the client pages back with ``before`` = its first seq."""
        validate_channel(channel)
        authz.require_read(principal, channel)
        limit = min(limit, self.limits.history_max_limit)
        bounds = await self._store.bounds(channel)
        # no further than the head read with the epoch, so the page is of that epoch
        before = min(before or MAX_SEQ, bounds.head + 1)
        budget = _Budget(self.limits.history_max_bytes)
        chunk = min(limit, self._read_chunk(channel))
        if after is not None:
            events = await self._read_forward(channel, after, before, limit, chunk, budget)
        else:
            events = await self._read_backward(channel, before, limit, chunk, budget)
        last = events[-1].seq if events else (after or 0)
        more = (len(events) == limit or budget.full) and last < before - 1  # before - 1 <= head
        return HistoryPage(events, bounds.head, bounds.first, last if more else None, bounds.epoch)

    async def _read_forward(
        self, channel: str, after: int, before: int, limit: int, chunk: int, budget: _Budget
    ) -> list[Event]:
        out: list[Event] = []
        while len(out) < limit:
            want = min(chunk, limit - len(out))
            batch = await self._store.read(channel, after=after, before=before, limit=want)
            for event in batch:
                if not budget.take(event):
                    return out
                out.append(event)
            if len(batch) < want:
                break
            after = batch[-1].seq
        return out

    async def _read_backward(
        self, channel: str, before: int, limit: int, chunk: int, budget: _Budget
    ) -> list[Event]:
        out: list[Event] = []  # newest first until the end
        while len(out) < limit:
            want = min(chunk, limit - len(out))
            batch = await self._store.read_last(channel, before=before, limit=want)
            for event in reversed(batch):
                if not budget.take(event):
                    out.reverse()
                    return out
                out.append(event)
            if len(batch) < want:
                break
            before = batch[0].seq
        out.reverse()
        return out

    async def sync(
        self, principal: Principal, positions: Mapping[str, int], epochs: Mapping[str, str] | None = None
    ) -> dict[str, SyncResult]:
        """Missed events for every ``{channel: last_seq}``; every channel is authorized first.
        ``epochs`` pairs some of these positions with the epoch they were read in: a
        position from another epoch is not recovered (``ChannelBounds.can_recover``). An
        epoch for a channel without a position pairs with nothing and is ignored."""
        epochs = epochs or {}
        if len(positions) > self.limits.sync_max_channels:
            raise AppError(
                ErrorCode.BAD_REQUEST, f"at most {self.limits.sync_max_channels} channels per sync"
            )
        for channel in positions:
            validate_channel(channel)
            authz.require_read(principal, channel)
        # one budget for the whole answer: a sync of many channels of big events
        # holds at most history_max_bytes, like one history page
        budget = _Budget(self.limits.history_max_bytes)
        return {channel: await self._sync_one(channel, since, epochs.get(channel), budget)
                for channel, since in positions.items()}

    async def _sync_one(self, channel: str, since: int, epoch: str | None, budget: _Budget) -> SyncResult:
        bounds = await self._store.bounds(channel)
        recovered = bounds.can_recover(since, epoch)
        after = since if recovered else bounds.first - 1
        events: list[Event] = []
        if not budget.full:
            # no further than the head read with the epoch, so the events are of that epoch
            events = await self._read_forward(
                channel, after, bounds.head + 1, self.limits.sync_max_events, self._read_chunk(channel), budget)
        has_more = (events[-1].seq if events else after) < bounds.head
        return SyncResult(events, bounds.head, recovered, has_more, bounds.epoch)

    def _read_chunk(self, channel: str) -> int:
        """Rows per read: as many as could fill ``HISTORY_READ_BYTES`` at this
        namespace's largest payload, so a page of big events never loads them all."""
        return max(1, HISTORY_READ_BYTES // (self._rules.for_channel(channel).max_payload_bytes + 1024))


class _Budget:
    """Bytes left for one answer (a history page, a sync); ``full`` once an event did not fit."""

    __slots__ = ("full", "left", "taken")

    def __init__(self, size: int) -> None:
        self.left = size
        self.full = False
        self.taken = 0

    def take(self, event: Event) -> bool:
        """Count ``event`` in; False (nothing counted) when it does not fit, unless it
        is the answer's first (an answer always makes progress)."""
        size = len(codec.encode_event(event))
        if size > self.left and self.taken:
            self.full = True
            return False
        self.left -= size
        self.taken += 1
        return True


def _as_result(result: Appended | BaseException) -> Appended | AppError:
    if isinstance(result, Appended | AppError):
        return result
    if isinstance(result, Exception):
        return AppError(ErrorCode.INTERNAL, "internal error")
    raise result  # CancelledError and friends are not results
