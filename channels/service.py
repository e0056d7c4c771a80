"""The use cases both transports call: publish, subscribe, history, sync.

Inputs arrive shape-validated (handlers/schemas.py); this layer checks channel
names, authorization and limits, and talks to the writer, store and fan-out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from . import authz, codec
from .errors import AppError, ErrorCode
from .fanout import Fanout, JoinResult
from .models import Appended, Event, JsonObject, NewEvent, Principal
from .names import validate_channel
from .namespaces import NamespaceRules
from .ports import EventStore
from .store.writer import GroupCommitWriter
from .telemetry import NullTelemetry, Telemetry


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Read-side limits (documented in the README's configuration table)."""

    history_max_limit: int = 1000
    sync_max_channels: int = 100
    sync_max_events: int = 1000


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """``head``: last committed seq; ``first``: lowest retained seq; ``next_after``:
    cursor for the next page (``None`` when this page reaches the head)."""

    events: list[Event]
    head: int
    first: int
    next_after: int | None


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Events after the client's position. ``recovered`` False: the position is older
    than retention (or ahead of the head) and ``events`` starts at the oldest kept;
    ``has_more``: call again with the last seq to continue."""

    events: list[Event]
    head: int
    recovered: bool
    has_more: bool


class ChannelService:
    def __init__(
        self,
        store: EventStore,
        writer: GroupCommitWriter,
        fanout: Fanout,
        rules: NamespaceRules,
        limits: ServiceLimits | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._fanout = fanout
        self._rules = rules
        self.limits = limits or ServiceLimits()
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self.draining = False

    async def publish(
        self,
        principal: Principal,
        channel: str,
        type: str,
        data: JsonObject,
        client_msg_id: str | None = None,
        *,
        via: str = "socket",
    ) -> Appended:
        """Durable publish: returns once committed. Nothing awaits before the
        writer takes the event, so one connection's publishes commit in emit order."""
        started = time.perf_counter()
        outcome = "internal"
        try:
            appended = await self._writer.submit(self._checked(principal, channel, type, data, client_msg_id))
            outcome = "duplicate" if appended.duplicate else "ok"
            return appended
        except AppError as exc:
            outcome = exc.code.value
            raise
        finally:
            self._telemetry.published(via, outcome, time.perf_counter() - started)

    def _checked(
        self, principal: Principal, channel: str, type: str, data: JsonObject, client_msg_id: str | None
    ) -> NewEvent:
        if self.draining:
            raise AppError(ErrorCode.UNAVAILABLE, "this instance is shutting down; reconnect and retry",
                           temporary=True)
        validate_channel(channel)
        options = self._rules.for_channel(channel)
        authz.require_publish(principal, channel, options)
        size = codec.encoded_size(data)
        if size > options.max_payload_bytes:
            raise AppError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"data is {size} bytes; the limit in this namespace is {options.max_payload_bytes}",
            )
        return NewEvent(channel, type, data, principal.sub, client_msg_id)

    async def subscribe(
        self, principal: Principal, conn_id: str, channel: str, since: int | None = None
    ) -> JoinResult:
        validate_channel(channel)
        authz.require_read(principal, channel)
        return await self._fanout.join(conn_id, channel, since)

    async def unsubscribe(self, conn_id: str, channel: str) -> None:
        validate_channel(channel)
        if not await self._fanout.leave(conn_id, channel):
            raise AppError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {channel}")

    async def drop_connection(self, conn_id: str, channels: list[str]) -> None:
        """A connection went away: leave everything it had joined."""
        for channel in channels:
            await self._fanout.leave(conn_id, channel)

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
        otherwise the newest ``limit`` events (before ``before`` when given)."""
        validate_channel(channel)
        authz.require_read(principal, channel)
        limit = min(limit, self.limits.history_max_limit)
        bounds = await self._store.bounds(channel)
        if after is not None:
            events = await self._store.read(channel, after=after, before=before, limit=limit)
        else:
            events = await self._store.read_last(channel, before=before, limit=limit)
        last = events[-1].seq if events else (after or 0)
        more = len(events) == limit and last < bounds.head and (before is None or last < before - 1)
        return HistoryPage(events, bounds.head, bounds.first, last if more else None)

    async def sync(self, principal: Principal, positions: Mapping[str, int]) -> dict[str, SyncResult]:
        """Missed events for every ``{channel: last_seq}``; every channel is authorized first."""
        if len(positions) > self.limits.sync_max_channels:
            raise AppError(
                ErrorCode.BAD_REQUEST, f"at most {self.limits.sync_max_channels} channels per sync"
            )
        for channel in positions:
            validate_channel(channel)
            authz.require_read(principal, channel)
        return {channel: await self._sync_one(channel, since) for channel, since in positions.items()}

    async def _sync_one(self, channel: str, since: int) -> SyncResult:
        bounds = await self._store.bounds(channel)
        recovered = bounds.can_recover(since)
        after = since if recovered else bounds.first - 1
        limit = self.limits.sync_max_events
        events = await self._store.read(channel, after=after, limit=limit)
        has_more = bool(events) and events[-1].seq < bounds.head
        return SyncResult(events, bounds.head, recovered, has_more)
