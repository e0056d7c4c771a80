"""The Socket.IO server, and what handlers may do to a connection (notify, close)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import orjson
import socketio

from channels.errors import AppError, ErrorCode
from channels.models import JsonObject
from handlers.connections import SocketControl
from handlers.sockets import SocketHandlers

from .config import Settings
from .delivery import cut_off
from .protocol import AttachmentLimits
from .socketio_server import LeanSocketIO

log = logging.getLogger(__name__)
NAMESPACE = "/"
CLOSE_GRACE = 2.0  # a client that does not take its goodbye within this is cut off


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


def build_sio(settings: Settings) -> LeanSocketIO:
    origins: str | list[str] | None = None  # None: same origin only (native apps send no Origin)
    if settings.cors_origins == ["*"]:
        origins = "*"
    elif settings.cors_origins:
        origins = list(settings.cors_origins)
    return LeanSocketIO(
        async_mode="aiohttp",
        websocket_compression=settings.websocket_compression,
        attachments=AttachmentLimits(settings.max_attachments, settings.transport_max_message_bytes,
                                     settings.attachment_timeout),
        connect_timeout=settings.connect_timeout,
        sessions_per_ip=settings.limit_pending_sessions_per_ip,
        client_ip=partial(client_ip, trust_forwarded_for=settings.trust_forwarded_for),
        json=_OrjsonJson,
        cors_allowed_origins=origins,
        max_http_buffer_size=settings.transport_max_message_bytes,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )


class SioControl(SocketControl):
    """Notifies and closes connections; a connection the server closes is told why first
    (``closing {code, message}``)."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def notify(self, conn_id: str, event: str, data: JsonObject) -> None:
        await self._sio.emit(event, data, to=conn_id)

    async def close(self, conn_id: str, reason: AppError, *, reconnect: bool = False) -> None:
        """``reconnect``: close only the Engine.IO transport, which Socket.IO clients
        treat as a lost connection and reconnect (a drain: come back elsewhere).
        Otherwise a Socket.IO disconnect, after which clients stay away (token
        expired, disconnected by the application's server). Callers record the
        reason on the connection first (``mark_closing``)."""
        eio_sid = self._sio.manager.eio_sid_from_sid(conn_id, NAMESPACE)
        await self._sio.emit("closing", reason.to_dict(), to=conn_id)
        if not reconnect:
            await self._sio.disconnect(conn_id)
        if eio_sid is None:
            return
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self._sio.eio.disconnect(eio_sid)
        except TimeoutError:  # it does not read: do not wait on it
            await cut_off(self._sio, conn_id, grace=0)


class SlowConsumers:
    """Cuts off connections whose output passed its bound (``slow_consumer``)."""

    def __init__(self, sio: socketio.AsyncServer, sockets: SocketHandlers, *, grace: float) -> None:
        self._sio = sio
        self._sockets = sockets
        self._grace = grace
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, sid: str) -> None:
        if not self._sockets.mark_closing(sid, ErrorCode.SLOW_CONSUMER.value):
            return  # already being closed
        log.warning("connection %s fell behind its send bound: cutting it off (slow_consumer)", sid)
        task = asyncio.get_running_loop().create_task(cut_off(self._sio, sid, grace=self._grace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def client_ip(environ: Mapping[str, Any], *, trust_forwarded_for: bool) -> str:
    """The peer address; behind a proxy (trusted), the last ``X-Forwarded-For`` entry."""
    if trust_forwarded_for:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[-1].strip())
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote) if remote else "unknown"
