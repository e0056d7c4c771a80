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
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import engineio
import socketio
from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

from handlers.sockets import REFUSED_EVENT, RESERVED_EVENTS

from .delivery import Flusher, SendBound, _WebSocket
from .handshake import Handshakes
from .protocol import AttachmentLimits, PendingBinary, ProtocolError, ProtocolErrors, check_binary_header
from .sendqueue import TrackedQueue
from .timers import FifoTimer


class PingClock(FifoTimer[AsyncSocket]):
    """Sends each socket its next PING ``interval`` seconds after it was scheduled: one
    FIFO and one timer instead of engineio's sleeping task per socket."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval, _send_ping)

    def schedule(self, socket: AsyncSocket) -> None:
        self.add(socket)


def _send_ping(socket: AsyncSocket) -> None:
    """engineio's ``AsyncSocket._send_ping`` after its sleep, without awaiting: its
    ``send`` only checks the ping timeout (just reset here) and puts on the queue."""
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


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


_BODY = "switchboard.polling_body"  # a polling POST's body, read and checked before engineio sees it


class _Body:
    """The ``wsgi.input`` of a polling POST whose body was already read."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data


def _translate_request(base: Callable[[web.Request], dict[str, Any]], request: web.Request) -> dict[str, Any]:
    environ = base(request)
    body = request.get(_BODY)
    if body is not None:
        environ["wsgi.input"] = _Body(body)
    return environ


# what a polling client sends; engineio cannot answer a POST with anything else
_FROM_POLLING_CLIENT = frozenset((eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE))


class LeanEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    websocket_compression = False
    # (eio_sid, message) -> True when it handled a text message itself (server/inline.py)
    inline: Callable[[str, str], bool] | None = None
    # every socket's send bound (installed by QueueDelivery, server/delivery.py)
    send_bound: SendBound | None = None
    # sessions not yet connected to the namespace (the Socket.IO server installs them)
    handshakes: Handshakes | None = None
    client_ip: Callable[[Mapping[str, Any]], str] = staticmethod(lambda environ: "unknown")  # noqa: E731
    refused: Callable[[str], None] | None = None  # counts a refused session by its code

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flusher = Flusher()
        self.pings = PingClock(self.ping_interval)
        # a copy: the driver's table is module state shared by every server
        drivers: dict[str, Any] = getattr(self, "_async")  # noqa: B009  (mypy cannot type the base class attribute)
        self._async = {**drivers, "websocket": _websocket,
                       "translate_request": partial(_translate_request, drivers["translate_request"])}
        self.protocol_errors = ProtocolErrors()  # the Socket.IO server shares its own

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """engineio's entry point, answering 400 (as the Engine.IO protocol says) where
        engineio raised (a 500 with a traceback) or logged a traceback: a POST to a
        session that has closed, and a polling body that is not an Engine.IO payload."""
        sid = request.query.get("sid")
        socket = self.sockets.get(sid) if sid is not None else None
        if sid is None and request.method == "GET" and self._too_many_sessions(request):
            return web.Response(status=429, text='"too many sessions from your address"', content_type="text/plain",
                                headers={"Retry-After": str(max(1, round(self.handshakes.timeout if self.handshakes else 1)))})
        if socket is not None and socket.closed:
            # engineio's _get_socket drops it too, but raising KeyError where a POST
            # does not catch it; unknown, it is an "Invalid session" (400)
            del self.sockets[sid]
        elif socket is not None and request.method == "POST":
            body = await request.read()  # at most client_max_size, the message cap (else 413)
            try:
                packets = eio_payload.Payload(encoded_payload=body.decode("utf-8")).packets
            except Exception as exc:  # the client's bytes, not our bug
                self.protocol_errors.report(socket.sid, ProtocolError("bad_payload", f"polling body: {exc}"))
                return web.Response(status=400, text='"Bad Request"', content_type="text/plain")
            kind = next((p.packet_type for p in packets if p.packet_type not in _FROM_POLLING_CLIENT), None)
            if kind is not None:  # OPEN is 0
                # engineio answers one with disconnect(wait=True), which waits for a
                # GET to drain the queue: the POST was never answered
                self.protocol_errors.report(socket.sid, ProtocolError(
                    "unknown_packet", f"Engine.IO packet type {kind} is not sent by polling clients", close=True))
                await socket.close(wait=False, abort=False, reason=self.reason.TRANSPORT_ERROR)
                self.sockets.pop(sid, None)  # a later request is an unknown session (400)
                return web.Response(status=400, text='"Bad Request"', content_type="text/plain")
            request[_BODY] = body
        response: web.StreamResponse = await super().handle_request(request)
        return response

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        """engineio's send, within the socket's send bound: python-socketio sends every
        ack, call reply and emit through here. Over the bound the message is dropped
        (the socket is being cut off as a slow consumer)."""
        bound = self.send_bound
        socket = self.sockets.get(sid)
        if bound is not None and socket is not None and pkt.packet_type == eio_packet.MESSAGE:
            data = pkt.data
            if not bound.admit(socket, len(data) if isinstance(data, (str, bytes)) else 0):
                return
        await super().send_packet(sid, pkt)

    def _too_many_sessions(self, request: web.Request) -> bool:
        """A new session from an address that holds its cap of sessions not yet connected."""
        if self.handshakes is None:
            return False
        environ = {"aiohttp.request": request, "HTTP_X_FORWARDED_FOR": request.headers.get("X-Forwarded-For", "")}
        if not self.handshakes.full(self.client_ip(environ)):
            return False
        if self.refused is not None:
            self.refused("too_many_sessions")
        return True

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


_BINARY = (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK)


class LeanSocketIO(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on ``LeanEngineIO``, strict about the protocol
    (server/protocol.py): what breaks it is reported once and counted, not raised."""

    def __init__(
        self,
        *args: Any,
        websocket_compression: bool = False,
        attachments: AttachmentLimits | None = None,
        connect_timeout: float = 10.0,
        sessions_per_ip: int = 0,
        client_ip: Callable[[Mapping[str, Any]], str] | None = None,
        **kwargs: Any,
    ) -> None:
        """``connect_timeout``: seconds an Engine.IO session has to connect to the namespace;
        ``sessions_per_ip``: most such sessions one client IP may hold (0: no cap),
        ``client_ip`` telling the IP from a request's environ (server/handshake.py)."""
        super().__init__(*args, **kwargs)
        self.eio.websocket_compression = websocket_compression
        self.handshakes = Handshakes(connect_timeout, sessions_per_ip, self._handshake_expired)
        self.eio.handshakes = self.handshakes
        if client_ip is not None:
            self.eio.client_ip = client_ip
        self.attachments = attachments or AttachmentLimits()
        self.protocol_errors: ProtocolErrors = self.eio.protocol_errors
        self._pending: dict[str, PendingBinary] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _engineio_server_class(self) -> type[LeanEngineIO]:
        return LeanEngineIO

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        """A client's EVENT packet. python-socketio would run one named ``connect`` or
        ``disconnect`` as the connection's own connect or disconnect, and fails on one
        without a name (``42[]``); those go to the handlers as ``REFUSED_EVENT`` with
        the name as first argument, which answers them as bad requests."""
        name = data[0] if isinstance(data, list) and data else None
        if not isinstance(name, str) or name in RESERVED_EVENTS:
            data = [REFUSED_EVENT, name, *(data[1:] if isinstance(data, list) else ())]
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        """python-socketio's dispatch of one Engine.IO message, with every way a client's
        packet can break the protocol reported (``ProtocolErrors``) instead of raised
        (python-socketio logs a traceback for each), and binary packets bounded."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            return  # ended (perhaps for a protocol error): what is still in flight is dropped
        try:
            await self._dispatch(eio_sid, data)
        except ProtocolError as exc:
            self.protocol_errors.report(eio_sid, exc)
            if exc.close:
                self._drop_pending(eio_sid)
                await self._end_session(eio_sid)

    async def _dispatch(self, eio_sid: str, data: str | bytes) -> None:
        pending = self._pending.get(eio_sid)
        if pending is not None:
            if pending.add(data, self.attachments):
                self._drop_pending(eio_sid)
                pkt = pending.packet
                handle = self._handle_event if pkt.packet_type == sio_packet.BINARY_EVENT else self._handle_ack
                await handle(eio_sid, pkt.namespace, pkt.id, pkt.data)
            return
        if not isinstance(data, str):
            raise ProtocolError("unexpected_binary", "a binary message no binary packet announced")
        binary = data[:1] in ("5", "6")
        if binary:
            check_binary_header(data, self.attachments)
        try:
            pkt = self.packet_class(encoded_packet=data)
        except Exception as exc:  # decoding the client's bytes: its error, not ours
            raise ProtocolError("undecodable", f"undecodable packet: {exc}", close=binary) from None
        kind = pkt.packet_type
        if kind == sio_packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
            return
        if kind == sio_packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
            return
        if kind not in (sio_packet.EVENT, sio_packet.ACK, *_BINARY):
            raise ProtocolError("unknown_packet", f"packet type {kind} is not sent by clients", close=binary)
        sid = self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/")
        if sid is None or not self.manager.is_connected(sid, pkt.namespace or "/"):
            raise ProtocolError("not_connected", f"a packet for namespace {pkt.namespace or '/'} before connecting to it",
                                close=binary)
        if kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            if type(pkt.data) is not list or not pkt.data or type(pkt.data[0]) is not str:
                if kind == sio_packet.EVENT and pkt.id is not None and type(pkt.data) is list:
                    await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)  # acked as refused
                raise ProtocolError("bad_event", "an event is a JSON array starting with its name", close=binary)
        elif pkt.id is None or pkt.id not in self.manager.callbacks.get(sid, {}):
            raise ProtocolError("unexpected_ack", "an ack for no call of the server's", close=binary)
        if binary:
            self._pending[eio_sid] = PendingBinary(pkt, self.attachments.timeout, partial(self._expire, eio_sid, pkt))
        elif kind == sio_packet.EVENT:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)

    def _expire(self, eio_sid: str, pkt: Any) -> None:
        pending = self._pending.get(eio_sid)
        if pending is None or pending.packet is not pkt:
            return
        self.protocol_errors.report(eio_sid, ProtocolError(
            "attachment_timeout", f"binary attachments not complete within {self.attachments.timeout:g}s", close=True))
        self._drop_pending(eio_sid)
        task = asyncio.get_running_loop().create_task(self._end_session(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _drop_pending(self, eio_sid: str) -> None:
        pending = self._pending.pop(eio_sid, None)
        if pending is not None:
            pending.cancel()

    async def _end_session(self, eio_sid: str) -> None:
        """Close the Engine.IO session (its disconnect handlers run) and its transport:
        the CLOSE packet goes out behind what it was sent, then the websocket closes."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return
        await socket.close(wait=False, abort=False, reason=self.reason.SERVER_DISCONNECT)
        socket.queue.put_nowait(None)  # ends the websocket's writer, which then closes it
        self.eio.sockets.pop(eio_sid, None)  # a later poll or POST is an unknown session (400)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        self.handshakes.opened(eio_sid, self.eio.client_ip(environ))

    def _handshake_expired(self, eio_sid: str) -> None:
        """No namespace connect within the deadline: the session is closed (counted, not
        logged: a phone that lost its network mid-handshake looks the same)."""
        if self.protocol_errors.count is not None:
            self.protocol_errors.count("connect_timeout")
        task = asyncio.get_running_loop().create_task(self._end_session(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        self.handshakes.done(eio_sid)
        self._drop_pending(eio_sid)
        self.protocol_errors.forget(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        """After a connect is admitted, keep only the part of the handshake's environ
        that a later connect could read. The rest (every header, copied under a
        new ``HTTP_*`` key: ~1.4 KiB) is emptied in place, because engineio's
        suspended handshake frames hold the same dict for the connection's life."""
        await super()._handle_connect(eio_sid, namespace, data)
        environ: dict[str, Any] | None = self.environ.get(eio_sid)
        if environ is None or self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is None:
            return  # refused: a retry reads all of it
        self.handshakes.done(eio_sid)
        kept = {key: environ[key] for key in _HANDSHAKE_KEYS if key in environ}
        if len(kept) < len(environ):
            environ.clear()
            self.environ[eio_sid] = kept
