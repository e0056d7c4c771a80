"""The live-event delivery path and the per-socket send bound.

python-socketio's room emit creates a task per recipient and waits for all of
them (profiled at ~45% of server time under fan-out in task creation and
wake-ups). Here an event's packet is encoded once and put straight onto each
member's Engine.IO send queue: no task per recipient, and each connection's
order with everything else it is sent (acks, pings) is the queue's FIFO order.

Every Engine.IO socket's queue is a ``TrackedQueue`` that counts what it holds.
A connection whose queue passes ``max_messages`` or ``max_bytes`` is a slow
consumer: it is cut off (``slow_consumer``) instead of growing server memory,
and never awaited inside a broadcast. It can reconnect and recover with
``since``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as aiohttp_driver
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from channels.models import Event
from channels.ports import Delivery

log = logging.getLogger(__name__)


class TrackedQueue(asyncio.Queue[Any]):
    """Engine.IO's per-socket send queue, also counting the characters it holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = 0

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.size += _packet_size(item)

    def _get(self) -> Any:
        item = super()._get()
        self.size -= _packet_size(item)
        return item

    def discard_pending(self) -> None:
        """Drop what has not been written yet (the connection is being cut off)."""
        while not self.empty():
            self.get_nowait()
            self.task_done()


def _packet_size(pkt: Any) -> int:
    data = getattr(pkt, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 0


class _WebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket, with per-message compression as configured
    (off by default: deflating every frame for every socket is the most
    expensive thing a broadcast can do) and its transport remembered on the
    Engine.IO socket, so a slow consumer can be cut off at once."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.server.websocket_compression
        )
        await self._sock.prepare(request)
        self.environ = environ
        owner = getattr(self.handler, "__self__", None)  # the engineio AsyncSocket
        if owner is not None:
            owner.transport = request.transport
        await self.handler(self)
        return self._sock


class BoundedEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    websocket_compression = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a copy: the driver's table is module state shared by every server
        drivers: dict[str, Any] = getattr(self, "_async")
        self._async = {**drivers, "websocket": _WebSocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> TrackedQueue:
        return TrackedQueue(*args, **kwargs)


class SwitchboardSocketIO(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on an Engine.IO server whose send queues are tracked."""

    def __init__(self, *args: Any, websocket_compression: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eio.websocket_compression = websocket_compression

    def _engineio_server_class(self) -> type[BoundedEngineIO]:
        return BoundedEngineIO


async def cut_off(sio: socketio.AsyncServer, sid: str) -> None:
    """End a connection that cannot keep up: its queue is full, so no goodbye can
    reach it. Drop what it has pending, close the Engine.IO socket (the
    disconnect handlers run) and abort the TCP connection, so its memory is
    freed now rather than when the kernel gives up on it."""
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    socket = sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
    if socket is None or socket.closed:
        return
    queue: TrackedQueue = socket.queue
    queue.discard_pending()
    await socket.close(wait=False, abort=True)
    queue.put_nowait(None)  # ends the socket's writer
    transport = getattr(socket, "transport", None)
    if transport is not None:
        transport.abort()
    sio.eio.sockets.pop(eio_sid, None)


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Most a connection may have waiting to be written before it is cut off."""

    max_messages: int = 1000
    max_bytes: int = 1 << 20


class QueueDelivery(Delivery):
    def __init__(
        self,
        sio: socketio.AsyncServer,
        limits: SendLimits,
        on_slow_consumer: Callable[[str], None],
    ) -> None:
        self._sio = sio
        self._limits = limits
        self._on_slow = on_slow_consumer

    async def broadcast(self, channel: str, event: Event) -> None:
        pkt = _event_packet(event)
        sockets = self._sio.eio.sockets
        for sid, eio_sid in self._sio.manager.get_participants("/", channel):
            self._put(sid, sockets.get(eio_sid), pkt)

    async def send(self, conn_id: str, event: Event) -> None:
        eio_sid = self._sio.manager.eio_sid_from_sid(conn_id, "/")
        if eio_sid is not None:
            self._put(conn_id, self._sio.eio.sockets.get(eio_sid), _event_packet(event))

    async def join(self, conn_id: str, channel: str) -> None:
        await self._sio.enter_room(conn_id, channel)

    async def leave(self, conn_id: str, channel: str) -> None:
        await self._sio.leave_room(conn_id, channel)

    def _put(self, sid: str, socket: Any, pkt: eio_packet.Packet) -> None:
        if socket is None or socket.closed or socket.closing:
            return
        queue: TrackedQueue = socket.queue
        if queue.qsize() >= self._limits.max_messages or queue.size + len(pkt.data) > self._limits.max_bytes:
            self._on_slow(sid)
            return
        queue.put_nowait(pkt)


def _event_packet(event: Event) -> eio_packet.Packet:
    """The Engine.IO message carrying Socket.IO ``event``, encoded once for every recipient."""
    encoded = sio_packet.Packet(sio_packet.EVENT, namespace="/", data=["event", event.wire()]).encode()
    return eio_packet.Packet(eio_packet.MESSAGE, encoded)
