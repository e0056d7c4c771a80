"""The Socket.IO server and the Delivery the fan-out writes through."""

from __future__ import annotations

from typing import Any

import orjson
import socketio

from channels.models import Event, PresenceChange
from channels.ports import Delivery

from .config import Settings


class _OrjsonJson:
    """The ``json`` module interface python-socketio encodes packets with, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


def build_sio(settings: Settings) -> socketio.AsyncServer:
    origins: str | list[str] | None = None  # None: same origin only (native apps send no Origin)
    if settings.cors_origins == ["*"]:
        origins = "*"
    elif settings.cors_origins:
        origins = list(settings.cors_origins)
    return socketio.AsyncServer(
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

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def broadcast(self, channel: str, event: Event) -> None:
        await self._sio.emit("event", event.wire(), room=channel)

    async def send(self, conn_id: str, event: Event) -> None:
        await self._sio.emit("event", event.wire(), to=conn_id)

    async def join(self, conn_id: str, channel: str) -> None:
        await self._sio.enter_room(conn_id, channel)

    async def leave(self, conn_id: str, channel: str) -> None:
        await self._sio.leave_room(conn_id, channel)

    async def presence(self, change: PresenceChange) -> None:
        await self._sio.emit("presence", change.wire(), room=change.channel)
