"""Presence use cases over the ``Presence`` port, and the join/leave announcements.

Every subscription is tracked (the subscriber count of ``stats`` needs it across
instances); only namespaces with ``presence = true`` expose members and get
``join``/``leave`` events. Announcements go out on the channel's own broker
channel, so exactly the instances with subscribers to it receive them.

Presence is secondary to delivery: when the backend is unreachable a subscribe
or connect still succeeds (logged); the adapter applies the change later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .. import codec
from ..errors import AppError, ErrorCode, PresenceUnavailable
from ..models import PresenceChange, PresenceMember, PresenceStats, Principal
from ..namespaces import NamespaceRules
from ..ports import Presence, PresenceListener

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]


class PresenceTracker(PresenceListener):
    """``publish(channel, payload)`` queues a broker message (the relay)."""

    def __init__(self, presence: Presence, rules: NamespaceRules, publish: Publish) -> None:
        self._presence = presence
        self._rules = rules
        self._publish = publish

    async def connect(self, principal: Principal, conn_id: str, limit: int) -> None:
        """Count a new connection; ``too_many_connections`` when the user holds ``limit``
        already, across instances (server tokens and ``limit`` 0: no limit)."""
        limit = 0 if principal.is_server else limit
        try:
            admitted = await self._presence.connect(conn_id, principal.sub, limit=limit)
        except PresenceUnavailable as exc:
            log.warning("connection limit not checked for %s: %s", principal.sub, exc.message)
            return
        if not admitted:
            raise AppError(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"user already has {limit} connections open; close one first",
            )

    async def disconnect(self, principal: Principal, conn_id: str) -> None:
        try:
            await self._presence.disconnect(conn_id, principal.sub)
        except PresenceUnavailable as exc:
            log.warning("connection of %s not uncounted yet: %s", principal.sub, exc.message)

    async def joined(self, principal: Principal, conn_id: str, channel: str) -> None:
        try:
            first = await self._presence.join(channel, conn_id, principal.sub, principal.info)
        except PresenceUnavailable as exc:
            log.warning("presence join of %s in %s deferred: %s", principal.sub, channel, exc.message)
            return
        if first:
            self._announce(PresenceChange(channel, principal.sub, "join"))

    async def left(self, principal: Principal, conn_id: str, channel: str) -> None:
        try:
            last = await self._presence.leave(channel, conn_id, principal.sub)
        except PresenceUnavailable as exc:
            log.warning("presence leave of %s in %s deferred: %s", principal.sub, channel, exc.message)
            return
        if last:
            self._announce(PresenceChange(channel, principal.sub, "leave"))

    def enabled(self, channel: str) -> bool:
        return self._rules.for_channel(channel).presence

    async def members(self, channel: str) -> list[PresenceMember]:
        """Members of a (valid, authorized) channel; ``bad_request`` if presence is off there."""
        if not self.enabled(channel):
            raise AppError(ErrorCode.BAD_REQUEST, f"presence is off in namespace '{channel.split(':', 1)[0]}'")
        return await self._presence.members(channel)

    async def stats(self, channel: str) -> PresenceStats:
        return await self._presence.stats(channel)

    def on_changes(self, changes: Sequence[PresenceChange]) -> None:
        for change in changes:
            self._announce(change)

    def _announce(self, change: PresenceChange) -> None:
        if self.enabled(change.channel):
            self._publish(change.channel, codec.encode_presence(change))
