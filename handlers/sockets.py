"""Socket.IO namespace ``/``: parse -> authorize -> limits -> service -> ack.

Every client call gets an ack: ``{ok: true, ...}`` or ``{ok: false, error:
{code, message}}``. No exception escapes a handler (that would mean no ack).
Connection admission, token expiry and closing live in ``connections.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import socketio
from pydantic import BaseModel, ValidationError

from channels.errors import AppError, ErrorCode
from channels.models import Appended, Principal
from channels.service import ChannelService
from channels.telemetry import NullTelemetry, Telemetry

from .acks import bad_request, fail, ok
from .connections import Connection, Connections
from .context import connection_id
from .schemas import HistoryIn, PresenceIn, PublishIn, RefreshIn, SubscribeIn, UnsubscribeIn

log = logging.getLogger(__name__)

Verify = Callable[[str | None], Principal]
Reply = Callable[[dict[str, Any]], None]  # sends a call's ack
M = TypeVar("M", bound=BaseModel)


InlineHandler = Callable[[str, tuple[object, ...], Reply | None], None]

# Event names python-socketio dispatches to handlers of its own (its reserved_events
# and the catch-all "*"), and connect_error, which Socket.IO reserves for the server.
# From a client they would re-run the connect or disconnect handler of its own
# connection (a second admission, a departure that leaves it connected), so the
# transport (server/socketio_server.py) hands them over as ``REFUSED_EVENT`` instead.
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "*", *socketio.AsyncServer.reserved_events})
# A name no call has; a client sending it gets the same refusal.
REFUSED_EVENT = "\x00refused"


class InlineCalls(Protocol):
    """Runs a call's handler as its message is read: ``handler(sid, args, reply)`` must not
    block; ``reply`` is None when the client asked for no ack."""

    def on(self, event: str, handler: InlineHandler) -> None: ...


class Refused(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused connect: the client's ``connect_error`` data is ``{code, message}``."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.message)
        self.error_args = error.to_dict()


# python-socketio's disconnect reasons, as metric labels
_REASONS = {
    "client disconnect": "client",
    "server disconnect": "server",
    "ping timeout": "ping_timeout",
    "transport close": "transport_close",
    "transport error": "transport_error",
}


class SocketHandlers:
    """The namespace's event handlers; ``connections`` is the registry of live ones."""

    def __init__(
        self, service: ChannelService, registry: Connections, verify: Verify, telemetry: Telemetry | None = None
    ) -> None:
        self._service = service
        self._registry = registry
        self._verify = verify
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self.connections: dict[str, Connection] = registry.items

    def mark_closing(self, sid: str, reason: str) -> bool:
        """Record why the server is about to end ``sid`` (for logs and metrics);
        False when it is gone or already being closed for another reason."""
        return self._registry.mark_closing(sid, reason)

    def register(self, sio: socketio.AsyncServer, inline: InlineCalls | None = None) -> None:
        """Handle the namespace's events on ``sio``; ``inline``: where calls that have
        a task-free form (publish) are registered for websocket connections."""
        if inline is not None:
            inline.on("publish", self.publish_now)
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("subscribe", self._guard("subscribe", SubscribeIn, self.subscribe))
        sio.on("unsubscribe", self._guard("unsubscribe", UnsubscribeIn, self.unsubscribe))
        sio.on("publish", self._guard("publish", PublishIn, self.publish))
        sio.on("history", self._guard("history", HistoryIn, self.history))
        sio.on("presence", self._guard("presence", PresenceIn, self.presence))
        sio.on("refresh", self._guard("refresh", RefreshIn, self.refresh))
        sio.on(REFUSED_EVENT, self.on_refused)
        sio.on("*", self.on_unknown)

    # -- connection lifecycle ------------------------------------------------

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        connection_id.set(sid)
        try:
            conn = await self._registry.admit(sid, environ, auth)
        except AppError as exc:
            log.info("connection refused: %s (%s)", exc.code, exc.message)
            self._telemetry.refused(exc.code.value)
            raise Refused(exc) from None
        log.debug("connected %s as %s", sid, conn.principal.sub)

    async def on_disconnect(self, sid: str, *reason: object) -> None:
        connection_id.set(sid)
        conn = self.connections.get(sid)
        if conn is not None:
            label = conn.close_reason or _REASONS.get(str(reason[0]) if reason else "", "unknown")
            self._telemetry.disconnected(label)
            log.debug("disconnected %s (%s)", sid, label)
        try:
            await self._registry.depart(sid)
        except Exception:
            log.exception("cleanup of connection %s failed", sid)

    async def on_unknown(self, event: str, sid: str, *_args: object) -> dict[str, Any]:
        self._note_bad_event(sid, f"unknown event {_short(event)}")
        return fail(AppError(ErrorCode.BAD_REQUEST, f"unknown event {_short(event)}"))

    async def on_refused(self, sid: str, name: object = None, *_args: object) -> dict[str, Any]:
        """A client event named like a reserved one (or with no string name): ``name``."""
        what = f"event name {_short(name)} is reserved" if isinstance(name, str) else "an event needs a string name"
        self._note_bad_event(sid, what)
        return fail(AppError(ErrorCode.BAD_REQUEST, what))

    def _note_bad_event(self, sid: str, what: str) -> None:
        """Log a connection's first bad event name only: the client chooses how many it sends."""
        conn = self.connections.get(sid)
        if conn is not None and not conn.sent_bad_event:
            conn.sent_bad_event = True
            log.info("%s from %s refused (further ones from this connection are not logged)", what, sid)

    # -- calls -------------------------------------------------------------

    async def subscribe(self, conn: Connection, msg: SubscribeIn) -> dict[str, Any]:
        limit = self._registry.limits.subscriptions_per_connection
        if (limit > 0 and not conn.principal.is_server and msg.channel not in conn.channels
                and len(conn.channels) + conn.joining >= limit):
            raise AppError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                           f"at most {limit} subscriptions per connection; unsubscribe from one first")
        conn.join_started()  # a refresh now waits for this join to land in conn.channels
        try:
            result = await self._service.subscribe(conn.principal, conn.sid, msg.channel, msg.since, msg.epoch)
            if conn.closed:
                # the socket went away while we were joining: undo, nobody will leave for it
                await self._service.drop_connection(conn.principal, conn.sid, [msg.channel])
                raise AppError(ErrorCode.UNAVAILABLE, "connection closed", temporary=True)
            conn.channels.add(msg.channel)
        finally:
            conn.join_ended()
        return ok(channel=msg.channel, head=result.head, recovered=result.recovered, epoch=result.epoch)

    async def unsubscribe(self, conn: Connection, msg: UnsubscribeIn) -> dict[str, Any]:
        await self._service.unsubscribe(conn.principal, conn.sid, msg.channel)
        conn.channels.discard(msg.channel)
        return ok(channel=msg.channel)

    async def publish(self, conn: Connection, msg: PublishIn) -> dict[str, Any]:
        return _published(await self._start_publish(conn, msg))

    def publish_now(self, sid: str, args: tuple[object, ...], reply: Reply | None) -> None:
        """``publish`` without a task (the inline path of websocket connections): checked
        and queued for commit before the connection's next message is read, so emit
        order is commit order; ``reply`` gets the ack from the commit's callback."""
        connection_id.set(sid)
        try:
            pending = self._start_publish(self._connection(sid), self._parse(PublishIn, args))
        except Exception as exc:
            ack = _error_ack("publish", sid, exc)
            if reply is not None:
                reply(ack)
            return
        pending.add_done_callback(lambda done: self._publish_done(sid, done, reply))

    def _start_publish(self, conn: Connection, msg: PublishIn) -> asyncio.Future[Appended]:
        if conn.publish_bucket is not None:  # checked without awaiting: emit order is kept
            retry = conn.publish_bucket.take(time.monotonic())
            if retry:
                raise AppError(ErrorCode.RATE_LIMITED, "too many publishes; retry later", retry_after=retry)
        return self._service.publish(conn.principal, msg.channel, msg.type, msg.data, msg.client_msg_id)

    @staticmethod
    def _publish_done(sid: str, done: asyncio.Future[Appended], reply: Reply | None) -> None:
        if done.cancelled():
            ack = fail(AppError(ErrorCode.UNAVAILABLE, "publish withdrawn", temporary=True))
        elif (exc := done.exception()) is None:
            ack = _published(done.result())
        else:
            ack = _error_ack("publish", sid, exc)
        if reply is not None:
            reply(ack)

    async def history(self, conn: Connection, msg: HistoryIn) -> dict[str, Any]:
        page = await self._service.history(
            conn.principal, msg.channel, after=msg.after, before=msg.before, limit=msg.limit
        )
        return ok(
            channel=msg.channel,
            events=[e.wire() for e in page.events],
            head=page.head,
            first=page.first,
            next_after=page.next_after,
            epoch=page.epoch,
        )

    async def presence(self, conn: Connection, msg: PresenceIn) -> dict[str, Any]:
        members = await self._service.presence(conn.principal, msg.channel)
        return ok(channel=msg.channel, members=[m.wire() for m in members])

    async def refresh(self, conn: Connection, msg: RefreshIn) -> dict[str, Any]:
        principal = self._verify(msg.token)
        dropped = await self._registry.refresh(conn, principal)
        return ok(expires_at=principal.expires_at, unsubscribed=dropped)

    # -- the guard -----------------------------------------------------------

    def _guard(
        self,
        name: str,
        model: type[M],
        call: Callable[[Connection, M], Awaitable[dict[str, Any]]],
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """Wrap a call: exactly one object argument, validated; every outcome an ack.

        Nothing here awaits before ``call`` runs, so calls from one connection
        reach the service in the order the client emitted them.
        """

        metered = name != "publish"  # publishes have their own bucket (publish_bucket)

        async def handler(sid: str, *args: object) -> dict[str, Any]:
            connection_id.set(sid)
            try:
                conn = self._connection(sid)
                if metered and conn.call_bucket is not None and (retry := conn.call_bucket.take(time.monotonic())):
                    raise AppError(ErrorCode.RATE_LIMITED, f"too many calls; retry {name} later", retry_after=retry)
                return await call(conn, self._parse(model, args))
            except Exception as exc:
                return _error_ack(name, sid, exc)

        return handler

    def _connection(self, sid: str) -> Connection:
        return self._registry.get(sid)

    @staticmethod
    def _parse(model: type[M], args: tuple[object, ...]) -> M:
        if len(args) != 1:
            raise AppError(ErrorCode.BAD_REQUEST, f"expected one object argument, got {len(args)}")
        if not isinstance(args[0], dict):
            raise AppError(ErrorCode.BAD_REQUEST, "argument must be a JSON object")
        try:
            return model.model_validate(args[0])
        except ValidationError as exc:
            raise bad_request(exc) from None


def _short(name: object, keep: int = 64) -> str:
    """A client-chosen name as it may appear in logs and acks: quoted, at most ``keep`` characters."""
    text = repr(name)
    return text if len(text) <= keep else text[: keep - 3] + "..."


def _published(appended: Appended) -> dict[str, Any]:
    event = appended.event
    return ok(seq=event.seq, id=event.id, duplicate=appended.duplicate)


def _error_ack(name: str, sid: str, exc: BaseException) -> dict[str, Any]:
    """The ack for a call that failed: an ``AppError`` as it is (logged by its gravity),
    anything else as ``internal`` (logged with its traceback)."""
    if isinstance(exc, AppError):
        _log_failure(name, sid, exc)
        return fail(exc)
    log.error("%s from %s failed", name, sid, exc_info=exc)
    return fail(AppError(ErrorCode.INTERNAL, "internal error"))


def _log_failure(name: str, sid: str, exc: AppError) -> None:
    level = logging.WARNING if exc.temporary else logging.INFO
    log.log(level, "%s from %s refused: %s (%s)", name, sid, exc.code, exc.message)
