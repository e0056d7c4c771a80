"""The live-event delivery path and the per-socket send bound.

python-socketio's room emit creates a task per recipient and waits for all of
them (profiled at ~45% of server time under fan-out in task creation and
wake-ups). Here an event's packet and its WebSocket frame are built once; the
frame goes straight into each member's output (or behind what its Engine.IO
queue still holds), and every touched socket is written once per loop
iteration: no task per recipient, and each connection keeps the order of
everything it is sent (events, acks, pings).

Every Engine.IO socket's queue is a ``TrackedQueue`` that counts what it holds.
A connection whose queue passes ``max_messages`` or ``max_bytes`` is a slow
consumer: it is cut off (``slow_consumer``) instead of growing server memory,
and never awaited inside a broadcast. It can reconnect and recover with
``since``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver
from socketio import packet as sio_packet

from channels.models import Event, PresenceChange
from channels.ports import Delivery

from .sendqueue import TrackedQueue

log = logging.getLogger(__name__)
REPLAY_WAIT = 10.0  # how long a recovery replay waits for its socket to make room before cutting it off


class FramedText(str):
    """An encoded Engine.IO message that also carries its complete WebSocket frame,
    built once and written as-is to every websocket it is sent to."""

    frame: bytes


def framed(text: str) -> FramedText:
    out = FramedText(text)
    out.frame = ws_frame(text.encode(), opcode=0x1)
    return out


def ws_frame(payload: bytes, *, opcode: int) -> bytes:
    """An unmasked, final, uncompressed server frame (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


class Flusher:
    """Writes every websocket that was given frames during this loop iteration,
    once, with ``writelines``: frames due to one connection in the same
    iteration leave in one write."""

    def __init__(self) -> None:
        self._dirty: list[_WebSocket] = []

    def mark(self, ws: _WebSocket) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(ws)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for ws in dirty:
            ws.flush()


class _WebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket, writing its own frames.

    Everything this connection is sent (engineio's writer: acks, pings; the
    delivery path: events) becomes frames in one output list, flushed once per
    loop iteration, in the order sent. Per-message compression is off unless
    configured: deflating every frame for every socket is the most expensive
    thing a broadcast can do. With compression on, frames go through aiohttp.
    """

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.server.websocket_compression
        )
        await self._sock.prepare(request)
        self.environ = environ
        self.transport = request.transport
        self._out: list[bytes] = []
        self._out_size = 0
        self._direct = not self._sock.compress
        owner = getattr(self.handler, "__self__", None)  # the engineio AsyncSocket
        self.sid: str | None = None
        if owner is not None:
            owner.ws = self
            self.sid = owner.sid
        await self.handler(self)
        return self._sock

    async def wait(self) -> str | bytes:
        """The next message for engineio's reader; calls the server handles inline
        (``LeanEngineIO.inline`` in server/engine.py) are consumed here and never reach it."""
        inline = self.server.inline if self.sid is not None else None
        while True:
            msg = await self._sock.receive()
            data = msg.data
            if type(data) is str:
                if inline is None or not data.startswith("42") or not inline(self.sid, data):
                    return data
            elif isinstance(data, bytes):
                return data
            else:
                raise OSError()  # closed or an error: what engineio's reader expects

    async def send(self, message: str | bytes) -> None:
        if not self._direct:
            await super().send(message)
        elif isinstance(message, FramedText):
            self.push(message.frame)
        elif isinstance(message, str):
            self.push(ws_frame(message.encode(), opcode=0x1))
        else:
            self.push(ws_frame(bytes(message), opcode=0x2))

    def accepts_direct(self) -> bool:
        return self._direct

    def push(self, frame: bytes) -> None:
        if not self._out:
            self.server.flusher.mark(self)
        self._out.append(frame)
        self._out_size += len(frame)

    def buffered(self) -> int:
        """Bytes written to this connection and not yet taken by the network."""
        transport = self.transport
        return self._out_size + (transport.get_write_buffer_size() if transport is not None else 0)

    def flush(self) -> None:
        out, self._out, self._out_size = self._out, [], 0
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.writelines(out)

    def discard_pending(self) -> None:
        """Drop frames not yet handed to the transport."""
        self._out, self._out_size = [], 0

    def abort(self) -> None:
        self.discard_pending()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def close(self) -> None:
        self.flush()
        await self._sock.close()


async def cut_off(sio: socketio.AsyncServer, sid: str, *, grace: float) -> None:
    """End a connection that cannot keep up. What it has pending is dropped (freed);
    a farewell (``closing {code: slow_consumer}`` and a Socket.IO disconnect) goes
    behind what is already in flight, so a client that wakes up reads the events
    it had, then why it was cut; the Engine.IO socket closes (the disconnect
    handlers run). If the client has not taken its farewell within ``grace``
    seconds its TCP connection is aborted, so a stalled peer cannot pin buffers."""
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    socket = sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
    if socket is None or socket.closed:
        return
    queue: TrackedQueue = socket.queue
    queue.discard_pending()
    ws: _WebSocket | None = getattr(socket, "ws", None)
    if ws is not None and ws.accepts_direct():
        ws.discard_pending()
        for pkt in _farewell():
            ws.push(pkt.encode().frame)
    else:
        for pkt in _farewell():
            queue.put_nowait(pkt)
    await socket.close(wait=False, abort=True)
    queue.put_nowait(None)  # ends the socket's writer once the farewell is out
    sio.eio.sockets.pop(eio_sid, None)
    if ws is not None:
        asyncio.get_running_loop().call_later(grace, ws.abort)


def _farewell() -> list[eio_packet.Packet]:
    notice = {"code": "slow_consumer", "message": "you fell too far behind; reconnect and resubscribe with since"}
    out = []
    for pkt in (
        sio_packet.Packet(sio_packet.EVENT, namespace="/", data=["closing", notice]),
        sio_packet.Packet(sio_packet.DISCONNECT, namespace="/"),
    ):
        encoded = pkt.encode()
        eio = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        eio.encode_cache = framed("4" + encoded)
        out.append(eio)
    return out


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Most a connection may have waiting to be written before it is cut off."""

    max_messages: int = 1000
    max_bytes: int = 1 << 20


class SendBound:
    """The per-socket send bound, over everything a connection is sent: events, call
    replies (acks, python-socketio's and the inline path's), notices.

    ``admit`` is asked before anything is put on a socket's way out. A socket whose
    output (its Engine.IO queue, plus on a websocket the frames not yet taken by the
    network) would pass ``max_messages`` or ``max_bytes`` with it is not given it:
    ``on_over`` is called with the Engine.IO socket (the caller cuts it off as a
    slow consumer), and the message is dropped. So a client that does not read is
    cut off whatever it asked for, and a reply cannot grow server memory past the
    bound (issue 10: ``history`` replies to a client that never read).
    """

    __slots__ = ("_on_over", "limits")

    def __init__(self, limits: SendLimits, on_over: Callable[[Any], None]) -> None:
        self.limits = limits
        self._on_over = on_over

    @staticmethod
    def pending(socket: Any) -> int:
        """Bytes (characters, for queued packets) this socket has not yet sent."""
        ws: _WebSocket | None = getattr(socket, "ws", None)
        queue: TrackedQueue = socket.queue
        return queue.size + (ws.buffered() if ws is not None else 0)

    def admit(self, socket: Any, size: int) -> bool:
        """True when ``size`` more bytes fit in ``socket``'s bound; else the socket is
        reported over its bound (``on_over``) and the caller drops what it had."""
        if socket.queue.qsize() < self.limits.max_messages and self.pending(socket) + size <= self.limits.max_bytes:
            return True
        self._on_over(socket)
        return False


class QueueDelivery(Delivery):
    """Delivers events to local sockets within the send bound; it installs that bound
    (``SendBound``) on ``sio``'s Engine.IO server, so the server's other sends (acks,
    call replies, notices) count against the same bound."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        limits: SendLimits,
        on_slow_consumer: Callable[[str], None],
    ) -> None:
        self._sio = sio
        self._limits = limits
        self._on_slow = on_slow_consumer
        self._bound = SendBound(limits, self._over)
        sio.eio.send_bound = self._bound

    def _over(self, socket: Any) -> None:
        sid = self._sio.manager.sid_from_eio_sid(socket.sid, "/")
        if sid is not None:
            self._on_slow(sid)
        # not connected to the namespace: it is sent nothing but its handshake's
        # answer, and the handshake deadline closes it

    async def broadcast(self, channel: str, event: Event) -> None:
        pkt = _event_packet(event)
        sockets = self._sio.eio.sockets
        for _sid, eio_sid in self._sio.manager.get_participants("/", channel):
            self._put(sockets.get(eio_sid), pkt)

    async def send(self, conn_id: str, event: Event) -> None:
        """Recovery replay: one connection, no waiting, the send bound applies (the
        replay paces itself with ``writable``)."""
        socket = self._socket(conn_id)
        if socket is not None:
            self._put(socket, _event_packet(event))

    async def writable(self, conn_id: str) -> bool:
        """Wait while the connection's output is over half its bound, woken by its
        progress (its queue taken by engineio's writer, the transport draining), for
        at most ``REPLAY_WAIT`` seconds; then it is cut off as a slow consumer."""
        socket = self._socket(conn_id)
        if socket is None or socket.closed or socket.closing:
            return False
        if not self._crowded(socket):
            return True
        try:
            async with asyncio.timeout(REPLAY_WAIT):
                while self._crowded(socket) and not (socket.closed or socket.closing):
                    await _output_moved(socket, self._limits.max_bytes // 2)
        except TimeoutError:
            self._on_slow(conn_id)
            return False
        except ConnectionError:  # the transport went away while we waited
            return False
        return not (socket.closed or socket.closing)

    def _socket(self, conn_id: str) -> Any:
        eio_sid = self._sio.manager.eio_sid_from_sid(conn_id, "/")
        return self._sio.eio.sockets.get(eio_sid) if eio_sid is not None else None

    async def presence(self, change: PresenceChange) -> None:
        await self._sio.emit("presence", change.wire(), room=change.channel)

    def _crowded(self, socket: Any) -> bool:
        size = SendBound.pending(socket)
        return size > self._limits.max_bytes // 2 or socket.queue.qsize() > self._limits.max_messages // 2

    async def join(self, conn_id: str, channel: str) -> None:
        await self._sio.enter_room(conn_id, channel)

    async def leave(self, conn_id: str, channel: str) -> None:
        await self._sio.leave_room(conn_id, channel)

    def _put(self, socket: Any, pkt: eio_packet.Packet) -> None:
        if socket is None or socket.closed or socket.closing:
            return
        ws = _direct_ws(socket)
        if ws is not None:
            frame = pkt.encode().frame
            if self._bound.admit(socket, len(frame)):
                ws.push(frame)
        elif self._bound.admit(socket, len(pkt.data)):
            socket.queue.put_nowait(pkt)


async def _output_moved(socket: Any, mark: int) -> None:
    """Return once some of what the socket holds has moved towards the client: its
    queue was taken by engineio's writer (or a long-poll), its frames were handed to
    the transport, or the transport drained below its low-water mark."""
    queue: TrackedQueue = socket.queue
    ws: _WebSocket | None = getattr(socket, "ws", None)
    if not queue.empty():
        await queue.join()
        return
    if ws is None:
        return  # an empty queue is all a long-polling socket holds
    transport = ws.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection closed")
    if ws._out:  # noqa: SLF001  the flusher writes them in this loop iteration
        await asyncio.sleep(0)
        return
    if transport.get_write_buffer_limits()[1] > mark:
        # the transport tells its protocol when it has drained only past its
        # high-water mark: put that at the mark so a backed-up replay is woken
        transport.set_write_buffer_limits(high=mark)
    protocol: Any = transport.get_protocol()  # aiohttp's RequestHandler
    if protocol.writing_paused:
        # aiohttp's drain waiter is shared with its own writer: do not cancel it on timeout
        await asyncio.shield(_drained(protocol))
    else:
        await asyncio.sleep(0)  # paused by nothing: the bytes are the protocol's to write now


async def _drained(protocol: Any) -> None:
    try:
        await protocol._drain_helper()  # noqa: SLF001  aiohttp's own wait for resume_writing
    except ConnectionError:
        pass  # the caller sees the transport closing


def _direct_ws(socket: Any) -> _WebSocket | None:
    """The socket's websocket when a frame may go straight into its output: upgraded,
    uncompressed, and nothing queued before it (so the connection's FIFO holds)."""
    ws: _WebSocket | None = getattr(socket, "ws", None)
    if ws is not None and socket.upgraded and ws.accepts_direct() and socket.queue.empty():
        return ws
    return None


def send_now(socket: Any, message: str) -> None:
    """Send an Engine.IO MESSAGE (``message`` without its "4") behind everything the socket
    was sent before, without awaiting: written this loop iteration on a websocket, else
    queued for engineio's writer. Within the socket's send bound: over it, the message
    is dropped and the socket reported (``SendBound``)."""
    bound: SendBound | None = getattr(socket.server, "send_bound", None)
    if bound is not None and not bound.admit(socket, len(message) + 1):
        return
    ws = _direct_ws(socket)
    if ws is not None:
        ws.push(ws_frame(f"4{message}".encode(), opcode=0x1))
    else:
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, message))


def _event_packet(event: Event) -> eio_packet.Packet:
    """The Engine.IO message carrying Socket.IO ``event``, encoded (and framed) once
    for every recipient: engineio caches a packet's encoding on the packet."""
    encoded = sio_packet.Packet(sio_packet.EVENT, namespace="/", data=["event", event.wire()]).encode()
    pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
    pkt.encode_cache = framed("4" + encoded)
    return pkt
