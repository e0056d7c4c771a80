"""In-process presence: the embedded default, and a stand-in for Redis in tests.

``MemoryPresenceHub`` plays the part of Redis (the same data model as
``scripts.py``); every primitive runs without awaiting, so it is atomic in the
event loop, as a Lua script is in Redis. Several ``MemoryPresence`` objects on
one hub behave like instances sharing one Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..models import JsonObject, PresenceChange, PresenceMember, PresenceStats
from .base import PresenceBase
from .ops import Op, Result


@dataclass
class MemoryPresenceHub:
    """The shared state; ``clock`` is in seconds (monotonic by default)."""

    clock: Callable[[], float] = time.monotonic
    deadlines: dict[str, float] = field(default_factory=dict)
    identities: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)  # (channel|"", conn) -> user
    entries: dict[str, dict[str, tuple[str, JsonObject]]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)


def _decrement(counts: dict[str, int], key: str) -> int:
    n = counts.get(key, 0) - 1
    if n <= 0:
        counts.pop(key, None)
    else:
        counts[key] = n
    return n


class MemoryPresence(PresenceBase):
    """``Presence`` within one process; see the module docstring."""

    def __init__(self, hub: MemoryPresenceHub | None = None, *, timeout: float = 60.0) -> None:
        super().__init__(timeout=timeout)
        self._hub = hub if hub is not None else MemoryPresenceHub()

    async def _b_heartbeat(self, identity: str, *, register: bool) -> bool:
        hub, now = self._hub, self._hub.clock()
        deadline = hub.deadlines.get(identity)
        if not register and (deadline is None or deadline < now):
            return False
        hub.deadlines[identity] = now + self.ttl
        return True

    async def _b_retire(self, identity: str) -> None:
        self._hub.deadlines[identity] = 0.0

    async def _b_expired(self) -> list[str]:
        now = self._hub.clock()
        return [i for i, deadline in self._hub.deadlines.items() if deadline < now][:100]

    async def _b_reap(self, identity: str, batch: int) -> tuple[list[PresenceChange], bool]:
        hub = self._hub
        deadline = hub.deadlines.get(identity)
        if deadline is not None and deadline >= hub.clock():
            return [], True
        owned = hub.identities.get(identity, {})
        changes = []
        for (channel, conn) in list(owned)[:batch]:
            user = owned.pop((channel, conn))
            if not channel:
                _decrement(hub.users, user)
                continue
            hub.entries.get(channel, {}).pop(f"{identity}/{conn}", None)
            if _decrement(hub.counts.setdefault(channel, {}), user) <= 0:
                changes.append(PresenceChange(channel, user, "leave"))
            self._drop_empty(channel)
        if owned:
            return changes, False
        hub.identities.pop(identity, None)
        hub.deadlines.pop(identity, None)
        return changes, True

    async def _b_apply(self, identity: str, ops: list[Op]) -> list[Result] | None:
        hub, now = self._hub, self._hub.clock()
        deadline = hub.deadlines.get(identity)
        if deadline is None or deadline < now:
            return None
        hub.deadlines[identity] = now + self.ttl
        owned = hub.identities.setdefault(identity, {})
        return [self._apply_one(identity, owned, op) for op in ops]

    def _apply_one(self, identity: str, owned: dict[tuple[str, str], str], op: Op) -> int:
        hub = self._hub
        if op.kind == "connect":
            n = hub.users.get(op.user, 0)
            if ("", op.conn) in owned:
                return n
            if op.limit > 0 and n >= op.limit:
                return -1
            owned[("", op.conn)] = op.user
            hub.users[op.user] = n + 1
            return n + 1
        if op.kind == "disconnect":
            if owned.pop(("", op.conn), None) is None:
                return -1
            return max(_decrement(hub.users, op.user), 0)
        entry = f"{identity}/{op.conn}"
        if op.kind == "join":
            if (op.channel, op.conn) in owned:
                return -1
            owned[(op.channel, op.conn)] = op.user
            hub.entries.setdefault(op.channel, {})[entry] = (op.user, op.info)
            counts = hub.counts.setdefault(op.channel, {})
            counts[op.user] = counts.get(op.user, 0) + 1
            return counts[op.user]
        if owned.pop((op.channel, op.conn), None) is None:
            return -1
        hub.entries.get(op.channel, {}).pop(entry, None)
        left = max(_decrement(hub.counts.setdefault(op.channel, {}), op.user), 0)
        self._drop_empty(op.channel)
        return left

    def _drop_empty(self, channel: str) -> None:
        for table in (self._hub.entries, self._hub.counts):
            if not table.get(channel, True):
                del table[channel]

    async def _b_members(self, channel: str) -> list[PresenceMember]:
        counts: dict[str, int] = {}
        infos: dict[str, JsonObject] = {}
        for user, info in self._hub.entries.get(channel, {}).values():
            counts[user] = counts.get(user, 0) + 1
            infos[user] = info
        return [PresenceMember(user, counts[user], infos[user]) for user in sorted(counts)]

    async def _b_stats(self, channel: str) -> PresenceStats:
        return PresenceStats(len(self._hub.entries.get(channel, {})), len(self._hub.counts.get(channel, {})))

    async def _b_ping(self) -> None:
        return None
