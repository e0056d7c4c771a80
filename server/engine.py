"""The Engine.IO server: tracked send queues, the lean websocket session of
server/websocket.py, one clock for every ping, and polling requests checked
before engineio sees them (it answered some with a 500 or never).

Pings are due ``ping_interval`` after the client's pong, as in engineio, and
every socket's next ping waits in one FIFO (``PingClock``) behind one timer
instead of a sleeping task per socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import engineio
from aiohttp import web
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from engineio.async_socket import AsyncSocket

from .delivery import Flusher, SendBound
from .handshake import Handshakes
from .protocol import ProtocolError, ProtocolErrors
from .sendqueue import TrackedQueue
from .timers import FifoTimer
from .websocket import _websocket


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
        if sid is None and request.method == "GET" and (retry := self._too_many_sessions(request)):
            return web.Response(status=429, text='"too many sessions from your address"', content_type="text/plain",
                                headers={"Retry-After": str(retry)})
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
                await self.end_session(socket.sid, self.reason.TRANSPORT_ERROR)
                return web.Response(status=400, text='"Bad Request"', content_type="text/plain")
            request[_BODY] = body
        response: web.StreamResponse = await super().handle_request(request)
        return response

    async def end_session(self, sid: str, reason: Any) -> None:
        """Close the session (its disconnect handlers run with ``reason``) and its transport:
        the CLOSE packet goes out behind what it was sent, then the websocket closes or
        a waiting poll answers; a later request is an unknown session (400)."""
        socket = self.sockets.get(sid)
        if socket is None or socket.closed or socket.closing:
            return
        await socket.close(wait=False, abort=False, reason=reason)
        socket.queue.put_nowait(None)  # ends the websocket's writer (or a poll), which then closes it
        self.sockets.pop(sid, None)

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

    def _too_many_sessions(self, request: web.Request) -> int:
        """For a new session from an address that holds its cap of sessions not yet
        connected: the seconds to retry after (one connect deadline); else 0."""
        if self.handshakes is None:
            return 0
        environ = {"aiohttp.request": request, "HTTP_X_FORWARDED_FOR": request.headers.get("X-Forwarded-For", "")}
        if not self.handshakes.full(self.client_ip(environ)):
            return 0
        if self.refused is not None:
            self.refused("too_many_sessions")
        return max(1, round(self.handshakes.timeout))

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
