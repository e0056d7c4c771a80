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

    async def _b_connect(self, identity: str, conn: str, user: str, limit: int) -> bool:
        owned = self._hub.identities.setdefault(identity, {})
        if ("", conn) in owned:
            return True
        if limit > 0 and self._hub.users.get(user, 0) >= limit:
            return False
        owned[("", conn)] = user
        self._hub.users[user] = self._hub.users.get(user, 0) + 1
        return True

    async def _b_disconnect(self, identity: str, conn: str, user: str) -> None:
        if self._hub.identities.get(identity, {}).pop(("", conn), None) is not None:
            _decrement(self._hub.users, user)

    async def _b_join(self, identity: str, channel: str, conn: str, user: str, info: JsonObject) -> bool:
        hub = self._hub
        owned = hub.identities.setdefault(identity, {})
        if (channel, conn) in owned:
            return False
        owned[(channel, conn)] = user
        hub.entries.setdefault(channel, {})[f"{identity}/{conn}"] = (user, info)
        counts = hub.counts.setdefault(channel, {})
        counts[user] = counts.get(user, 0) + 1
        return counts[user] == 1

    async def _b_leave(self, identity: str, channel: str, conn: str, user: str) -> bool:
        hub = self._hub
        if hub.identities.get(identity, {}).pop((channel, conn), None) is None:
            return False
        hub.entries.get(channel, {}).pop(f"{identity}/{conn}", None)
        last = _decrement(hub.counts.setdefault(channel, {}), user) <= 0
        self._drop_empty(channel)
        return last

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
