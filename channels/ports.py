"""The ports of the domain. Adapters subclass these explicitly.

Every method's docstring is its contract; the suites in ``tests/contract/`` hold
every adapter to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .models import (
    Appended,
    ChannelBounds,
    Event,
    JsonObject,
    NewEvent,
    PresenceChange,
    PresenceMember,
    PresenceStats,
)


class EventStore(Protocol):
    """Durable, per-channel ordered event log.

    Adapters: ``PostgresEventStore`` (asyncpg) and ``SqliteEventStore`` (aiosqlite).
    Any method may raise ``StoreUnavailable`` when the database cannot be
    reached; nothing is then committed.
    """

    async def start(self) -> None:
        """Connect (or open the pool) and apply pending migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent; the store is unusable afterwards."""

    async def append(self, batch: Sequence[NewEvent]) -> list[Appended]:
        """Commit ``batch`` in one transaction and return one result per item, aligned.

        * Atomic: either every new event of the batch is committed or none is
          (then ``StoreUnavailable`` is raised).
        * Ordered and gapless: the new events of a channel get the next
          ``seq`` values after the channel's head, contiguous, in batch order,
          even when several writers (processes) append to the same channel
          concurrently. A ``seq`` is never reused.
        * Idempotent: an item whose ``(channel, client_msg_id)`` is already
          stored, or appears earlier in the same batch, stores nothing; its
          result is the original event with ``duplicate=True``.
        * ``id`` and ``ts`` (commit time, ms since epoch) are assigned here.
        * Raises ``AppError(bad_request)`` for data no store can keep (NUL
          characters, lone surrogates, integers beyond 64 bits); the writer
          rejects such items before they can fail a whole batch.
        * If the connection breaks during COMMIT the outcome is unknown and
          ``StoreUnavailable`` is raised: a retry with the same
          ``client_msg_id`` is what makes such a publish safe.
        """

    async def read(
        self,
        channel: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int,
    ) -> list[Event]:
        """The oldest ``limit`` retained events with ``after < seq`` (and ``seq < before``), ascending."""

    async def read_last(
        self,
        channel: str,
        *,
        before: int | None = None,
        limit: int,
    ) -> list[Event]:
        """The newest ``limit`` retained events (with ``seq < before``), returned ascending."""

    async def bounds(self, channel: str) -> ChannelBounds:
        """Head, first retained ``seq`` and epoch of ``channel``, read in one snapshot
        (``ChannelBounds(0, 1, "")`` if it has no history). Never writes."""

    async def ensure(self, channel: str) -> ChannelBounds:
        """Like ``bounds``, but a channel without history gets one now (head 0, a new
        epoch), so the epoch answered is the one its coming events belong to: a
        subscriber told it can pair it with the seqs it then receives live.
        Concurrent calls from any process agree on one epoch."""

    async def reset_epochs(
        self, *, channels: Sequence[str] | None = None, namespace: str | None = None
    ) -> int:
        """Give a new epoch to every channel named in ``channels``, or of ``namespace``,
        or (neither given) to every channel: their histories cannot continue (the
        database was restored from a backup, say), so no position from before
        may be recovered. Seqs, heads and events stay as they are. Channels
        without history are skipped (they get an epoch when it is created).
        Returns how many channels got a new epoch; ``ValueError`` if both are given."""

    async def heads(self, channels: Sequence[str]) -> dict[str, int]:
        """Head ``seq`` of each channel (0 for unknown ones), in one round trip."""

    async def namespaces(self) -> list[str]:
        """Every namespace that has at least one channel, sorted (retention walks these)."""

    async def prune(
        self,
        namespace: str,
        *,
        max_age_seconds: float | None = None,
        max_events: int | None = None,
    ) -> int:
        """Delete events of channels in ``namespace`` older than ``max_age_seconds``
        and/or beyond the newest ``max_events`` per channel. Heads never move
        back: a pruned channel keeps its ``last_seq`` and its epoch (the history
        continues; positions below ``first - 1`` are simply not recoverable).
        Returns rows deleted."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers a trivial query."""


class BrokerListener(Protocol):
    """What a broker calls back into (the fan-out)."""

    def on_message(self, channel: str, payload: bytes) -> None:
        """A message published to ``channel``. Called from the broker's listener
        task, in the order the broker delivered them; must not block or raise."""

    def on_resubscribed(self) -> None:
        """Delivery was interrupted (connection lost and re-established with every
        channel subscribed again, or a full delivery queue): messages published
        meanwhile may be lost, so the listener should fill gaps from the store.
        Must not block or raise."""


class Broker(Protocol):
    """Cross-instance pub/sub, one broker channel per Switchboard channel.

    Adapters: ``RedisBroker`` (redis-py asyncio pub/sub) and ``MemoryBroker``
    (one process). Delivery may lose messages (a reconnect, a full queue) and
    an instance receives its own publishes too: the store, not the broker, is
    the source of truth; the fan-out drops duplicates by ``seq`` and fills gaps
    from the store. An instance
    receives its own publishes too.
    """

    async def start(self, listener: BrokerListener) -> None:
        """Connect and start the listener task that calls ``listener``."""

    async def close(self) -> None:
        """Stop the listener task (cancelled and awaited) and disconnect. Idempotent."""

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``. When this returns, every message
        published to it afterwards (by any instance) will reach the listener
        while the connection holds. Subscribing twice is a no-op. When it
        raises (``BrokerUnavailable``: not confirmed in time) the channel stays
        wanted and is subscribed on reconnect; a caller that gives up must
        ``unsubscribe``."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``; no message published after this returns
        reaches the listener. Unsubscribing an unknown channel is a no-op."""

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``(channel, payload)`` pairs in order, pipelined in one round
        trip where the backend allows. Raises ``BrokerUnavailable`` on failure."""

    async def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the broker answers."""


class PresenceListener(Protocol):
    """What a presence adapter reports to (the presence tracker)."""

    def on_changes(self, changes: Sequence[PresenceChange]) -> None:
        """Changes nobody asked for: users whose last connection in a channel
        was removed because its instance stopped heartbeating (``leave``), or
        whose connections were re-registered after this instance lost its
        entries (``join``). Called from the adapter's task; must not block or raise."""


class Presence(Protocol):
    """Who is joined to which channel, and how many connections each user holds,
    across all instances.

    Adapters: ``RedisPresence`` and ``MemoryPresence`` (one process; several on
    one ``MemoryPresenceHub`` act like instances sharing a Redis). Entries belong
    to the adapter object that added them. It heartbeats every ``timeout / 5``;
    an instance that has not heartbeaten for ``0.75 * timeout`` is dead and any
    instance's reaper removes its entries (idempotently, in batches) and reports
    the users whose last connection went, so a killed instance's members are gone
    within ``timeout``. Liveness never waits on work: every batch of changes
    counts as a heartbeat, and the heartbeat does not queue behind changes or
    reaping. Once declared dead an identity is refused every write, so a
    reaped instance leaves nothing behind; when it runs again it re-registers
    its live entries under a new identity. Across that, every (channel, user)
    gets exactly one ``leave`` if its membership was reaped and one ``join`` if
    it was re-added, and none while another connection of the user held it.

    ``join``/``leave`` and ``connect``/``disconnect`` are atomic on the backend:
    "first" and "last" answers are exact across instances. Every method except
    ``start`` and ``close`` may raise ``PresenceUnavailable``; the call is then
    remembered locally and applied when the backend answers again.
    """

    async def start(self, listener: PresenceListener) -> None:
        """Register this instance, reap instances that died meanwhile, start heartbeating."""

    async def close(self) -> None:
        """Stop heartbeating and remove this instance's remaining entries (reported
        to the listener as ``leave``). Idempotent."""

    async def connect(self, conn: str, user: str, *, limit: int = 0) -> bool:
        """Count connection ``conn`` of ``user``. False (nothing counted) when the
        user already holds ``limit`` connections across instances (0: no limit).
        Counting the same ``conn`` twice is a no-op that returns True."""

    async def disconnect(self, conn: str, user: str) -> None:
        """Uncount ``conn``. Unknown connections are a no-op."""

    async def join(self, channel: str, conn: str, user: str, info: JsonObject) -> bool:
        """Add ``conn`` of ``user`` to ``channel``; True if it is the user's first
        connection there (on any instance). Joining twice is a no-op returning False."""

    async def leave(self, channel: str, conn: str, user: str) -> bool:
        """Remove ``conn`` from ``channel``; True if it was the user's last
        connection there. Unknown entries are a no-op returning False."""

    async def members(self, channel: str) -> list[PresenceMember]:
        """Every user joined to ``channel``, each once, sorted by user id."""

    async def stats(self, channel: str) -> PresenceStats:
        """Connections and distinct users joined to ``channel``."""

    async def ping(self) -> None:
        """Raise ``PresenceUnavailable`` unless the backend answers."""


class Delivery(Protocol):
    """How the fan-out hands events to local connections (provided by ``server/``).

    Each connection receives what is sent to it in call order; ``broadcast``
    encodes the event once for all members of the channel. Each connection has a
    send bound: one that has more waiting than the bound allows is cut off as a
    slow consumer (and can reconnect and recover with ``since``), never waited for.
    """

    async def broadcast(self, channel: str, event: Event) -> None:
        """Send ``event`` to every local connection that joined ``channel``, without
        waiting on any of them. Raises only before any connection was handed the
        event (the fan-out then retries the same event)."""

    async def send(self, conn_id: str, event: Event) -> None:
        """Send ``event`` to one connection (recovery replay), without waiting; the
        send bound applies. A connection that is gone is a no-op."""

    async def writable(self, conn_id: str) -> bool:
        """Wait until ``conn_id`` has room for more (a replay paces itself with this),
        for at most the delivery's own time bound. False when the connection is gone
        or did not make room in time; the delivery has then cut it off as a slow
        consumer. Waits on this one connection only, woken by its progress (not by
        polling); callers must not hold a lock that others wait for."""

    async def join(self, conn_id: str, channel: str) -> None:
        """Make ``conn_id`` a member of ``channel`` for later broadcasts."""

    async def leave(self, conn_id: str, channel: str) -> None:
        """Stop broadcasts of ``channel`` to ``conn_id``."""

    async def presence(self, change: PresenceChange) -> None:
        """Send a presence change to every local connection that joined its channel."""
