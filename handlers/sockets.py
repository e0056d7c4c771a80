"""Socket.IO namespace ``/``: parse -> authorize -> service -> ack.

Every client call gets an ack: ``{ok: true, ...}`` or ``{ok: false, error:
{code, message}}``. No exception escapes a handler (that would mean no ack).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import socketio
from pydantic import BaseModel, ValidationError

from channels.errors import AppError, ErrorCode
from channels.models import Principal
from channels.service import ChannelService
from channels.telemetry import NullTelemetry, Telemetry

from .acks import bad_request, fail, ok
from .context import connection_id
from .schemas import HistoryIn, PublishIn, SubscribeIn, UnsubscribeIn

log = logging.getLogger(__name__)

Authenticate = Callable[[object, Mapping[str, Any]], Principal]
M = TypeVar("M", bound=BaseModel)


class Refused(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused connect: the client's ``connect_error`` data is ``{code, message}``."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.message)
        self.error_args = error.to_dict()


@dataclass(eq=False, slots=True)
class Connection:
    sid: str
    principal: Principal
    channels: set[str] = field(default_factory=set)
    closed: bool = False
    close_reason: str | None = None  # set when the server ends the connection on purpose


# python-socketio's disconnect reasons, as metric labels
_REASONS = {
    "client disconnect": "client",
    "server disconnect": "server",
    "ping timeout": "ping_timeout",
    "transport close": "transport_close",
    "transport error": "transport_error",
}


class SocketHandlers:
    """The namespace's event handlers and the registry of live connections."""

    def __init__(
        self, service: ChannelService, authenticate: Authenticate, telemetry: Telemetry | None = None
    ) -> None:
        self._service = service
        self._authenticate = authenticate
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self.connections: dict[str, Connection] = {}

    def mark_closing(self, sid: str, reason: str) -> bool:
        """Record why the server is about to end ``sid`` (for logs and metrics);
        False when it is gone or already being closed for another reason."""
        conn = self.connections.get(sid)
        if conn is None or conn.close_reason is not None:
            return False
        conn.close_reason = reason
        return True

    def register(self, sio: socketio.AsyncServer) -> None:
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("subscribe", self._guard("subscribe", SubscribeIn, self.subscribe))
        sio.on("unsubscribe", self._guard("unsubscribe", UnsubscribeIn, self.unsubscribe))
        sio.on("publish", self._guard("publish", PublishIn, self.publish))
        sio.on("history", self._guard("history", HistoryIn, self.history))
        sio.on("*", self.on_unknown)

    # -- connection lifecycle ------------------------------------------------

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        connection_id.set(sid)
        try:
            principal = self._authenticate(auth, environ)
        except AppError as exc:
            log.info("connection refused: %s (%s)", exc.code, exc.message)
            self._telemetry.refused(exc.code.value)
            raise Refused(exc) from None
        self.connections[sid] = Connection(sid, principal)
        log.debug("connected %s as %s", sid, principal.sub)

    async def on_disconnect(self, sid: str, *reason: object) -> None:
        connection_id.set(sid)
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        conn.closed = True
        label = conn.close_reason or _REASONS.get(str(reason[0]) if reason else "", "unknown")
        self._telemetry.disconnected(label)
        log.debug("disconnected %s (%s)", sid, label)
        try:
            await self._service.drop_connection(sid, sorted(conn.channels))
        except Exception:
            log.exception("cleanup of connection %s failed", sid)

    async def on_unknown(self, event: str, sid: str, *_args: object) -> dict[str, Any]:
        log.info("unknown event %r from %s", event, sid)
        return fail(AppError(ErrorCode.BAD_REQUEST, f"unknown event {event!r}"))

    # -- calls -------------------------------------------------------------

    async def subscribe(self, conn: Connection, msg: SubscribeIn) -> dict[str, Any]:
        result = await self._service.subscribe(conn.principal, conn.sid, msg.channel, msg.since)
        if conn.closed:
            # the socket went away while we were joining: undo, nobody will leave for it
            await self._service.drop_connection(conn.sid, [msg.channel])
            raise AppError(ErrorCode.UNAVAILABLE, "connection closed", temporary=True)
        conn.channels.add(msg.channel)
        return ok(channel=msg.channel, head=result.head, recovered=result.recovered)

    async def unsubscribe(self, conn: Connection, msg: UnsubscribeIn) -> dict[str, Any]:
        await self._service.unsubscribe(conn.sid, msg.channel)
        conn.channels.discard(msg.channel)
        return ok(channel=msg.channel)

    async def publish(self, conn: Connection, msg: PublishIn) -> dict[str, Any]:
        appended = await self._service.publish(
            conn.principal, msg.channel, msg.type, msg.data, msg.client_msg_id
        )
        event = appended.event
        return ok(seq=event.seq, id=event.id, duplicate=appended.duplicate)

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
        )

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

        async def handler(sid: str, *args: object) -> dict[str, Any]:
            connection_id.set(sid)
            try:
                conn = self._connection(sid)
                return await call(conn, self._parse(model, args))
            except AppError as exc:
                _log_failure(name, sid, exc)
                return fail(exc)
            except Exception:
                log.exception("%s from %s failed", name, sid)
                return fail(AppError(ErrorCode.INTERNAL, "internal error"))

        return handler

    def _connection(self, sid: str) -> Connection:
        conn = self.connections.get(sid)
        if conn is None:
            raise AppError(ErrorCode.UNAVAILABLE, "connection is closing", temporary=True)
        return conn

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


def _log_failure(name: str, sid: str, exc: AppError) -> None:
    level = logging.WARNING if exc.temporary else logging.INFO
    log.log(level, "%s from %s refused: %s (%s)", name, sid, exc.code, exc.message)
