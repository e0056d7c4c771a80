"""The Socket.IO server: python-socketio's, on ``LeanEngineIO``, strict about
the protocol (server/protocol.py): reserved event names refused, binary
attachments bounded, a deadline for the namespace connect, and every way a
client's packet can break the protocol reported once and counted, not raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import socketio
from socketio import packet as sio_packet

from handlers.sockets import REFUSED_EVENT, RESERVED_EVENTS

from .engine import LeanEngineIO
from .handshake import Handshakes
from .protocol import AttachmentLimits, PendingBinary, ProtocolError, ProtocolErrors, check_binary_header

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
        self._end_session_soon(eio_sid)

    def _drop_pending(self, eio_sid: str) -> None:
        pending = self._pending.pop(eio_sid, None)
        if pending is not None:
            pending.cancel()

    async def _end_session(self, eio_sid: str) -> None:
        await self.eio.end_session(eio_sid, self.reason.SERVER_DISCONNECT)

    def _end_session_soon(self, eio_sid: str) -> None:
        """``_end_session`` from a timer callback: a task kept until it is done."""
        task = asyncio.get_running_loop().create_task(self._end_session(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        self.handshakes.opened(eio_sid, self.eio.client_ip(environ))

    def _handshake_expired(self, eio_sid: str) -> None:
        """No namespace connect within the deadline: the session is closed (counted, not
        logged: a phone that lost its network mid-handshake looks the same)."""
        if self.protocol_errors.count is not None:
            self.protocol_errors.count("connect_timeout")
        self._end_session_soon(eio_sid)

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
