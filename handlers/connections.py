"""This instance's connections: admission (limits), token lifecycle, closing with a reason.

Admission order is cheapest first: the per-IP connection rate (before any token
work), then the token, then the user's connection count across instances. A
connection's token is watched by one ``ExpiryClock`` for all connections: an
``expiring {in_seconds}`` warning before it expires, and a close with
``token_expired`` after the grace period unless ``refresh`` swapped in a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels import authz
from channels.errors import AppError, ErrorCode
from channels.limits import KeyedBuckets, Limits, TokenBucket
from channels.models import JsonObject, Principal
from channels.service import ChannelService

from .expiry import Due, ExpiryClock

log = logging.getLogger(__name__)

Authenticate = Callable[[object, Mapping[str, Any]], Principal]
ClientIp = Callable[[Mapping[str, Any]], str]


class SocketControl(Protocol):
    """What the transport (server/sockets.py) lets handlers do to a connection."""

    async def notify(self, conn_id: str, event: str, data: JsonObject) -> None:
        """Emit ``event`` to one connection."""

    async def close(self, conn_id: str, reason: AppError) -> None:
        """Emit ``closing {code, message}``, then disconnect the connection."""


@dataclass(eq=False, slots=True)
class Connection:
    sid: str
    principal: Principal
    channels: set[str] = field(default_factory=set)
    joining: int = 0  # subscribes in flight: they count against the limit too
    publish_bucket: TokenBucket | None = None
    call_bucket: TokenBucket | None = None  # subscribe, unsubscribe, history, presence, refresh
    sent_bad_event: bool = False  # an unknown or reserved event name was logged for it
    closed: bool = False
    close_reason: str | None = None  # set when the server ends the connection on purpose
    joins_done: asyncio.Future[None] | None = None  # made by a refresh waiting for ``joining`` to be 0

    def join_started(self) -> None:
        self.joining += 1

    def join_ended(self) -> None:
        """A subscribe in flight has finished (joined and recorded, or failed)."""
        self.joining -= 1
        waiter = self.joins_done
        if self.joining == 0 and waiter is not None:
            self.joins_done = None
            if not waiter.done():
                waiter.set_result(None)

    async def joins_settled(self) -> None:
        """Return once no subscribe is in flight; without suspending when none is."""
        while self.joining:
            if self.joins_done is None:
                self.joins_done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.joins_done)  # shared by concurrent refreshes: one's cancel is not theirs


class Connections:
    def __init__(
        self,
        service: ChannelService,
        authenticate: Authenticate,
        control: SocketControl,
        *,
        limits: Limits,
        client_ip: ClientIp,
        expiry: ExpiryClock,
        sweep_interval: float = 0.5,
    ) -> None:
        self._service = service
        self._authenticate = authenticate
        self._control = control
        self.limits = limits
        self._client_ip = client_ip
        self._expiry = expiry
        self._sweep_interval = sweep_interval
        self._ip_buckets = KeyedBuckets(limits.connect_rate, limits.connect_burst) if limits.connect_rate > 0 else None
        self.items: dict[str, Connection] = {}
        self._by_user: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _close(self, sid: str, reason: AppError) -> None:
        if self.mark_closing(sid, reason.code.value):
            await self._control.close(sid, reason)

    def mark_closing(self, sid: str, reason: str) -> bool:
        """Record why the server is about to end ``sid``; False when it is gone or
        already being closed (the first reason wins)."""
        conn = self.items.get(sid)
        if conn is None or conn.close_reason is not None:
            return False
        conn.close_reason = reason
        return True

    def get(self, sid: str) -> Connection:
        conn = self.items.get(sid)
        if conn is None:
            raise AppError(ErrorCode.UNAVAILABLE, "connection is closing", temporary=True)
        return conn

    # -- admission and departure --------------------------------------------------

    async def admit(self, sid: str, environ: Mapping[str, Any], auth: object) -> Connection:
        """Raise ``AppError`` (the connect_error data) or register the connection."""
        if self._ip_buckets is not None:
            retry = self._ip_buckets.take(self._client_ip(environ), time.monotonic())
            if retry:
                raise AppError(ErrorCode.TOO_MANY_CONNECTIONS, "too many new connections from your address",
                               retry_after=retry)
        principal = self._authenticate(auth, environ)
        server = principal.is_server
        conn = Connection(sid, principal, publish_bucket=None if server else self.limits.publish_bucket(),
                          call_bucket=None if server else self.limits.call_bucket())
        self.items[sid] = conn  # before awaiting: a disconnect meanwhile must find it
        try:
            await self._service.open_connection(principal, sid, max_per_user=self.limits.connections_per_user)
        except BaseException:
            self.items.pop(sid, None)
            raise
        if conn.closed:  # gone while we counted it
            await self._service.close_connection(principal, sid, [])
            raise AppError(ErrorCode.UNAVAILABLE, "connection closed", temporary=True)
        self._by_user.setdefault(principal.sub, set()).add(sid)
        self._expiry.track(sid, principal.expires_at, time.time())
        return conn

    async def depart(self, sid: str) -> None:
        conn = self.items.pop(sid, None)
        if conn is None:
            return
        conn.closed = True
        self._expiry.forget(sid)
        users = self._by_user.get(conn.principal.sub)
        if users is not None:
            users.discard(sid)
            if not users:
                del self._by_user[conn.principal.sub]
        await self._service.close_connection(conn.principal, sid, sorted(conn.channels))

    # -- token refresh -------------------------------------------------------------

    async def refresh(self, conn: Connection, principal: Principal) -> list[str]:
        """Swap in a verified token of the same user; unsubscribe what it no longer reads,
        including channels of subscribes still in flight (it waits for them)."""
        if principal.sub != conn.principal.sub:
            raise AppError(ErrorCode.PERMISSION_DENIED, "a refresh token must be for the same user ('sub')")
        # A subscribe in flight was authorized on the old token and its channel is not in
        # conn.channels yet: decide once it has landed, or it would keep a channel the
        # new token may not read. Subscribes that start after the swap below use the new one.
        await conn.joins_settled()
        dropped = sorted(c for c in conn.channels if not authz.can_read(principal, c))
        conn.principal = principal
        conn.channels.difference_update(dropped)  # before awaiting: a concurrent refresh must not drop them again
        if not conn.closed:
            self._expiry.track(conn.sid, principal.expires_at, time.time())
        for channel in dropped:
            await self._service.drop_connection(principal, conn.sid, [channel])
        return dropped

    # -- the application's server ----------------------------------------------------

    async def disconnect_user(self, user: str) -> int:
        """Close every connection of ``user`` on this instance; how many there were."""
        sids = list(self._by_user.get(user, ()))
        reason = AppError(ErrorCode.DISCONNECTED_BY_SERVER, "disconnected by the application's server")
        await asyncio.gather(*(self._close(sid, reason) for sid in sids), return_exceptions=True)
        if sids:
            log.info("disconnected %d connections of %s", len(sids), user)
        return len(sids)

    # -- expiry ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch_expiry(), name="token-expiry")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep(time.time())
            except Exception:  # never die: a missed sweep is retried on the next tick
                log.exception("token expiry sweep failed")

    async def sweep(self, now: float) -> None:
        """Warn and close the connections whose deadlines have come."""
        for deadline in self._expiry.due(now):
            if deadline.conn_id not in self.items:
                continue
            try:
                if deadline.action is Due.WARN:
                    left = max(0, round(deadline.expires_at - now))
                    await self._control.notify(deadline.conn_id, "expiring", {"in_seconds": left})
                else:
                    log.info("closing %s: token expired", deadline.conn_id)
                    await self._close(deadline.conn_id, AppError(ErrorCode.TOKEN_EXPIRED, "token expired"))
            except Exception:
                log.exception("expiry %s of %s failed", deadline.action.value, deadline.conn_id)
