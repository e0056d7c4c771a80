"""The Socket.IO server, the Delivery the fan-out writes through, and the socket control."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from channels.errors import AppError, ErrorCode
from channels.models import Event, JsonObject, PresenceChange
from channels.ports import Delivery
from handlers.connections import SocketControl

from .config import Settings
from .sendqueue import SLOW_CONSUMER, BoundedEngineIO, SendBounds

log = logging.getLogger(__name__)
NAMESPACE = "/"
REPLAY_WAIT = 10.0  # how long a recovery replay waits for a slow socket to drain


class _OrjsonJson:
    """The ``json`` module interface python-socketio encodes packets with, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


class SwitchboardSio(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on ``BoundedEngineIO`` (bounded per-socket send queues)."""

    def __init__(self, *, send_bounds: SendBounds, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eio.configure(send_bounds, self._slow_consumer_farewell)

    def _engineio_server_class(self) -> type[BoundedEngineIO]:
        return BoundedEngineIO

    def _slow_consumer_farewell(self) -> list[Any]:
        """``closing {code: slow_consumer}`` and a Socket.IO disconnect, as Engine.IO packets."""
        notice = AppError(ErrorCode.SLOW_CONSUMER, "you fell too far behind; reconnect and resubscribe with since")
        packets = [
            self.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=["closing", notice.to_dict()]),
            self.packet_class(sio_packet.DISCONNECT, namespace=NAMESPACE),
        ]
        return [eio_packet.Packet(eio_packet.MESSAGE, p.encode()) for p in packets]

    def eio_sid(self, sid: str) -> str | None:
        eio_sid: str | None = self.manager.eio_sid_from_sid(sid, NAMESPACE)
        return eio_sid


def build_sio(settings: Settings) -> SwitchboardSio:
    origins: str | list[str] | None = None  # None: same origin only (native apps send no Origin)
    if settings.cors_origins == ["*"]:
        origins = "*"
    elif settings.cors_origins:
        origins = list(settings.cors_origins)
    return SwitchboardSio(
        send_bounds=SendBounds(settings.send_queue_max_messages, settings.send_queue_max_bytes,
                               settings.send_queue_close_grace),
        async_mode="aiohttp",
        json=_OrjsonJson,
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.transport_max_message_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )


class SocketDelivery(Delivery):
    """Delivers through python-socketio rooms: one room per channel, so a
    broadcast encodes the packet once for all its members."""

    def __init__(self, sio: SwitchboardSio) -> None:
        self._sio = sio

    async def broadcast(self, channel: str, event: Event) -> None:
        await self._sio.emit("event", event.wire(), room=channel)

    async def send(self, conn_id: str, event: Event) -> None:
        # a replay is paced by the socket: it must not cut its own client as a slow consumer
        eio_sid = self._sio.eio_sid(conn_id)
        if eio_sid is not None:
            await self._sio.eio.wait_roomy(eio_sid, REPLAY_WAIT)
        await self._sio.emit("event", event.wire(), to=conn_id)

    async def join(self, conn_id: str, channel: str) -> None:
        await self._sio.enter_room(conn_id, channel)

    async def leave(self, conn_id: str, channel: str) -> None:
        await self._sio.leave_room(conn_id, channel)

    async def presence(self, change: PresenceChange) -> None:
        await self._sio.emit("presence", change.wire(), room=change.channel)


class SioControl(SocketControl):
    """Notifies and closes connections; a closed connection is told why first."""

    def __init__(self, sio: SwitchboardSio) -> None:
        self._sio = sio

    async def notify(self, conn_id: str, event: str, data: JsonObject) -> None:
        await self._sio.emit(event, data, to=conn_id)

    async def close(self, conn_id: str, reason: AppError) -> None:
        eio_sid = self._sio.eio_sid(conn_id)
        await self._sio.emit("closing", reason.to_dict(), to=conn_id)
        await self._sio.disconnect(conn_id)
        if eio_sid is not None:
            # the transport too: a client that ignores the disconnect must not keep it
            await self._sio.eio.close_now(eio_sid, reason.code.value)


def client_ip(environ: Mapping[str, Any], *, trust_forwarded_for: bool) -> str:
    """The peer address; behind a proxy (trusted), the last ``X-Forwarded-For`` entry."""
    if trust_forwarded_for:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[-1].strip())
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote) if remote else "unknown"


__all__ = ["SLOW_CONSUMER", "SioControl", "SocketDelivery", "SwitchboardSio", "build_sio", "client_ip"]
