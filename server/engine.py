"""The Engine.IO and Socket.IO servers: tracked send queues, the frame-writing
websocket of server/delivery.py, and fewer tasks per connection.

An idle websocket costs engineio, per connection and for its whole life: a
task per received message (its reader wraps every ``ws.wait()`` in
``ensure_future`` + ``wait_for``, with a timer), a writer task that waits on
its queue through ``wait_for`` (a second task and timer), and a task sleeping
until the next ping. Each task brings a coroutine, futures and a context copy.
Here, with the same protocol behaviour:

- the websocket session (``websocket_session``) reads in the request's own
  task, with one read deadline per connection moved forward by each message
  instead of a timer per message, and its writer awaits the queue directly;
- pings are due ``ping_interval`` after the client's pong, as in engineio, and
  every socket's next ping waits in one FIFO (``PingClock``) behind one timer.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections import deque
from collections.abc import Callable
from typing import Any

import engineio
import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .delivery import Flusher, _WebSocket
from .sendqueue import TrackedQueue


class PingClock:
    """Sends each socket its next PING ``interval`` seconds after it was scheduled.

    The interval is the same for every socket, so due times come in the order
    sockets are scheduled: a FIFO and one timer for its head replace a sleeping
    task per socket.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._due: deque[tuple[float, AsyncSocket]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self, socket: AsyncSocket) -> None:
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self._interval, socket))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            _send_ping(due.popleft()[1])
        if due:
            self._timer = loop.call_at(due[0][0], self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


def _send_ping(socket: AsyncSocket) -> None:
    """engineio's ``AsyncSocket._send_ping`` after its sleep, without awaiting: its
    ``send`` only checks the ping timeout (just reset here) and puts on the queue."""
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


class _ReadDeadline:
    """Cancels the reading task when nothing arrived for ``timeout`` seconds: one
    timer per connection, re-armed only when it fires early."""

    __slots__ = ("_loop", "_task", "_timeout", "_handle", "last", "reading", "expired")

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


class LeanEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    websocket_compression = False
    # (eio_sid, message) -> True when it handled a text message itself (server/inline.py)
    inline: Callable[[str, str], bool] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flusher = Flusher()
        self.pings = PingClock(self.ping_interval)
        # a copy: the driver's table is module state shared by every server
        drivers: dict[str, Any] = getattr(self, "_async")
        self._async = {**drivers, "websocket": _websocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> TrackedQueue:
        return TrackedQueue(*args, **kwargs)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        # engineio schedules each next ping as a task sleeping ping_interval
        # (AsyncSocket.schedule_ping); it ignores the result, so none is returned
        if getattr(target, "__func__", None) is AsyncSocket._send_ping:
            self.pings.schedule(target.__self__)
            return None
        return super().start_background_task(target, *args, **kwargs)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "disconnect" and len(args) >= 2 and args[1] == self.reason.CLIENT_DISCONNECT:
            socket = self.sockets.get(args[0])
            if socket is not None and not socket.upgraded:
                # A long-polling client sent CLOSE: engineio closes without sending a
                # packet, which left a GET already waiting in poll() held for
                # ping_interval + ping_timeout, and the client's disconnect with it.
                socket.queue.put_nowait(None)  # poll() answers an empty payload
        return await super()._trigger_event(event, *args, **kwargs)


# what a later namespace connect on the same Engine.IO session reads from the
# handshake's environ (server/auth.py handshake_token, server/sockets.py client_ip)
_HANDSHAKE_KEYS = ("HTTP_AUTHORIZATION", "QUERY_STRING", "HTTP_X_FORWARDED_FOR", "aiohttp.request")


class LeanSocketIO(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on ``LeanEngineIO``."""

    def __init__(self, *args: Any, websocket_compression: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eio.websocket_compression = websocket_compression

    def _engineio_server_class(self) -> type[LeanEngineIO]:
        return LeanEngineIO

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        """After a connect is admitted, keep only the part of the handshake's environ
        that a later connect could read. The rest (every header, copied under a
        new ``HTTP_*`` key: ~1.4 KiB) is emptied in place, because engineio's
        suspended handshake frames hold the same dict for the connection's life."""
        await super()._handle_connect(eio_sid, namespace, data)
        environ: dict[str, Any] | None = self.environ.get(eio_sid)
        if environ is None or self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is None:
            return  # refused: a retry reads all of it
        kept = {key: environ[key] for key in _HANDSHAKE_KEYS if key in environ}
        if len(kept) < len(environ):
            environ.clear()
            self.environ[eio_sid] = kept
