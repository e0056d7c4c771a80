"""Engine.IO's websocket session with fewer tasks per connection.

An idle websocket costs engineio, per connection and for its whole life: a
task per received message (its reader wraps every ``ws.wait()`` in
``ensure_future`` + ``wait_for``, with a timer) and a writer task that waits on
its queue through ``wait_for`` (a second task and timer). Each task brings a
coroutine, futures and a context copy. Here, with the same protocol behaviour,
the session (``websocket_session``) reads in the request's own task, with one
read deadline per connection moved forward by each message instead of a timer
per message, and its writer awaits the queue directly. Frames are written by
server/delivery.py's ``_WebSocket``.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .delivery import _WebSocket
from .protocol import ProtocolError


class _ReadDeadline:
    """Cancels the reading task when nothing arrived for ``timeout`` seconds: one
    timer per connection, re-armed only when it fires early."""

    __slots__ = ("_handle", "_loop", "_task", "_timeout", "expired", "last", "reading")

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._timeout = timeout
        self.last = self._loop.time()
        self.reading = False
        self.expired = False
        self._handle = self._loop.call_at(self.last + timeout, self._check)

    def _check(self) -> None:
        due = self.last + self._timeout
        if not self.reading or self._loop.time() < due:
            self._handle = self._loop.call_at(max(due, self._loop.time() + 1.0), self._check)
            return
        self.expired = True
        self._task.cancel()

    def touch(self) -> None:
        self.last = self._loop.time()

    def absorb(self) -> None:
        """Take back the cancellation this deadline caused (the session ends normally)."""
        if self.expired:
            self._task.uncancel()

    def cancel(self) -> None:
        self._handle.cancel()


async def _read(socket: AsyncSocket, ws: Any) -> Any:
    data = await ws.wait()
    if data and len(data) > socket.server.max_http_buffer_size:
        raise ValueError("packet is too large")
    return data


async def _upgrade(socket: AsyncSocket, ws: Any) -> bool:
    """engineio's polling -> websocket probe exchange; False when it failed."""
    socket.upgrading = True  # hold packet sends during the upgrade
    try:
        pkt = eio_packet.Packet(encoded_packet=await _read(socket, ws))
    except OSError:
        return False
    if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
        socket.server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
        socket.upgrading = False
        return False
    await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end poll
    try:
        pkt = eio_packet.Packet(encoded_packet=await _read(socket, ws))
    except OSError:
        socket.upgrading = False
        return False
    if pkt.packet_type != eio_packet.UPGRADE:
        socket.upgraded = False
        socket.server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet", socket.sid)
        socket.upgrading = False
        return False
    socket.upgraded = True
    socket.upgrading = False
    return True


async def _write(socket: AsyncSocket, ws: Any) -> None:
    """engineio's writer loop. It waits on the queue without a timeout of its own:
    a silent client is ended by the read deadline, which then ends this with ``None``."""
    queue = socket.queue
    while True:
        pkt = await queue.get()
        queue.task_done()
        if pkt is None:
            break
        packets = [pkt]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        try:
            for pkt in packets:
                await ws.send(pkt.encode())
        except Exception:
            break
    await ws.close()


async def websocket_session(socket: AsyncSocket, ws: Any) -> None:
    """engineio's ``AsyncSocket._websocket_handler``, with the reader in this task."""
    server = socket.server
    if socket.connected:
        if not await _upgrade(socket, ws):
            return
    else:
        socket.connected = True
        socket.upgraded = True
    writer = asyncio.ensure_future(_write(socket, ws))
    deadline = _ReadDeadline(server.ping_interval + server.ping_timeout)
    try:
        while True:
            deadline.reading = True
            try:
                data = await _read(socket, ws)
            except asyncio.CancelledError:
                deadline.absorb()
                break  # as engineio: a cancelled session still closes its socket below
            except Exception:
                break
            deadline.reading = False
            if data is None:  # closed by the client
                break
            deadline.touch()
            try:
                pkt = eio_packet.Packet(encoded_packet=data)
            except Exception:  # not even Engine.IO (engineio lets this escape): end the transport
                server.logger.info("%s: undecodable packet, closing the transport", socket.sid)
                break
            if not 0 <= pkt.packet_type < len(eio_packet.packet_names):  # engineio indexes its names with it
                server.protocol_errors.report(socket.sid, ProtocolError(
                    "unknown_packet", f"Engine.IO packet type {pkt.packet_type} does not exist", close=True))
                break
            try:
                await socket.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:
                server.logger.exception("Unknown receive error")
    finally:
        deadline.cancel()
    await socket.queue.put(None)  # unlock the writer so it can exit
    await writer
    await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


def _websocket(handler: Any, server: Any) -> _WebSocket:
    """engineio builds the websocket with its socket's bound handler; swap in ours,
    bound to the same socket (``_WebSocket`` finds the socket through it)."""
    return _WebSocket(types.MethodType(websocket_session, handler.__self__), server)
