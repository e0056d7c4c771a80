"""The Socket.IO server and the Delivery the fan-out writes through."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import orjson
import socketio

from handlers.sockets import SocketHandlers

from .config import Settings
from .delivery import SwitchboardSocketIO, cut_off

log = logging.getLogger(__name__)


class _OrjsonJson:
    """The ``json`` module interface python-socketio encodes packets with, backed by orjson.

    python-socketio installs it process-wide (a class attribute of its Packet),
    so it must encode whatever the stdlib would: orjson refuses integers beyond
    64 bits, and those fall back to ``json``.
    """

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


def build_sio(settings: Settings) -> socketio.AsyncServer:
    origins: str | list[str] | None = None  # None: same origin only (native apps send no Origin)
    if settings.cors_origins == ["*"]:
        origins = "*"
    elif settings.cors_origins:
        origins = list(settings.cors_origins)
    return SwitchboardSocketIO(
        async_mode="aiohttp",
        websocket_compression=settings.websocket_compression,
        json=_OrjsonJson,
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.transport_max_message_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )


class SlowConsumers:
    """Cuts off connections whose send queue passed its bound (``slow_consumer``)."""

    def __init__(self, sio: socketio.AsyncServer, sockets: SocketHandlers) -> None:
        self._sio = sio
        self._sockets = sockets
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, sid: str) -> None:
        if not self._sockets.mark_closing(sid, "slow_consumer"):
            return  # already being closed
        log.warning("connection %s fell behind its send bound: cutting it off (slow_consumer)", sid)
        task = asyncio.get_running_loop().create_task(cut_off(self._sio, sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def close_connection(sio: socketio.AsyncServer, sockets: SocketHandlers, sid: str, reason: str) -> None:
    """End a connection on purpose: tell the client why (``closing {reason}``), then
    close its Engine.IO transport. Socket.IO clients treat a closed transport
    (unlike a Socket.IO-level disconnect) as a reason to reconnect, and a client
    that reconnects elsewhere recovers with ``since``."""
    sockets.mark_closing(sid, reason)
    await sio.emit("closing", {"reason": reason}, to=sid)
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    if eio_sid is not None:
        await sio.eio.disconnect(eio_sid)
