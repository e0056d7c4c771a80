"""The simulated client: one Socket.IO connection, and the lean implementation of it.

``SimClient`` is what scenarios drive. ``LeanClient`` speaks Engine.IO 4 /
Socket.IO 5 directly over one picows websocket: per connection it holds the
websocket and a dict of pending acks (no task), and it decodes a received
event with one ``orjson.loads`` in picows' per-frame callback. ``loadtest.sioclient`` offers the
same interface over python-socketio's ``AsyncClient`` for comparison
(``--client sio``); the lean one holds more connections per core (see
docs/BENCHMARKS.md), so it is the default.

Every failure is reported as a short *reason* (``connection_refused``,
``invalid_token``, ``http_502``, ``ack_timeout``, ...) so a run against a bad
setup ends in a table of reasons, not a wall of tracebacks.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import orjson
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSHandshakeError

from .protocol import (
    DISCONNECT_FRAME,
    PONG_FRAME,
    ProtocolError,
    SioType,
    decode_message,
    decode_open,
    encode_connect,
    encode_event,
)

EventHandler = Callable[[dict[str, Any]], None]
CloseHandler = Callable[[str], None]

# A received ``event`` with one argument is framed exactly like this; slicing the
# object out skips building the args list (the hot path of every fan-out run).
_EVENT_PREFIX = b'42["event",'
_EVENT_PREFIX_LEN = len(_EVENT_PREFIX)
_TEXT = WSMsgType.TEXT
# A dead server must not make closing 10,000 clients take long each.
CLOSE_TIMEOUT = 2.0


class ClientFailure(Exception):
    """A connect or call that failed; ``reason`` is the short key runs count by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SimClient(Protocol):
    """One simulated app connection.

    ``on_event`` gets every ``event`` payload; ``on_close`` gets the reason when
    the connection ends without ``close()`` having been called.
    """

    on_event: EventHandler | None
    on_close: CloseHandler | None

    @property
    def connected(self) -> bool: ...

    async def connect(self, url: str, token: str, timeout: float) -> None:
        """Connect and authenticate; ``ClientFailure`` with the reason otherwise."""

    async def send_call(self, event: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        """Emit ``event`` wanting an ack; returns once sent, with a future of the ack's first argument.

        Emits of one client reach the server in the order of their ``send_call``s.
        The future fails with ``ClientFailure('disconnected')`` if the connection ends first.
        """

    async def close(self) -> None:
        """Disconnect cleanly; idempotent."""


async def call(client: SimClient, event: str, data: dict[str, Any], timeout: float) -> Any:
    """Emit and wait for the ack; ``ClientFailure('ack_timeout')`` after ``timeout`` seconds."""
    future = await client.send_call(event, data)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise ClientFailure("ack_timeout", f"no ack to {event} in {timeout:g}s") from None


def reason_of(exc: BaseException) -> str:
    """The short reason for a failed connect or call."""
    if isinstance(exc, ClientFailure):
        return exc.reason
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"http_{exc.status}"
    if isinstance(exc, WSHandshakeError):
        return f"http_{int(exc.response.status)}" if exc.response is not None else "handshake_failed"
    if isinstance(exc, WSError):
        return "websocket_error"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    if isinstance(exc, ProtocolError):
        return "protocol_error"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, ConnectionResetError, aiohttp.ClientConnectionError)):
        return "connection_closed"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return type(exc).__name__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if exc.errno == errno.EMFILE:
        return "too_many_open_files"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no_free_local_port"
    return f"os_{errno.errorcode.get(exc.errno or 0, exc.errno)}".lower()


def websocket_url(url: str) -> str:
    """``http://host:port[/prefix]`` -> the Engine.IO websocket endpoint."""
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}/socket.io/?EIO=4&transport=websocket"


class _Frames(WSListener):
    """picows calls this for every frame, synchronously, as its bytes are parsed."""

    def __init__(self, client: LeanClient) -> None:
        self.client = client

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.client.attached(transport)  # before any frame: the open packet is answered at once

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT:
            payload = frame.get_payload_as_memoryview()
            client = self.client
            # the hot path of every fan-out run, once per received event: kept flat
            if payload[:_EVENT_PREFIX_LEN] == _EVENT_PREFIX and client.on_event is not None and client._connected:
                client.on_event(orjson.loads(payload[_EVENT_PREFIX_LEN:-1]))
            else:
                client.on_text(payload)
        elif kind is WSMsgType.CLOSE:
            self.client.closed_by_server(frame.get_close_code().value)
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client.disconnected()


class LeanClient(SimClient):
    """A minimal Socket.IO client over one picows websocket (websocket transport only).

    picows parses frames in C and hands each to ``on_text`` synchronously: no task,
    future or ``await`` per received message, which is what a fan-out run receives
    hundreds of thousands of per second.
    """

    def __init__(self) -> None:
        self.on_event: EventHandler | None = None
        self.on_close: CloseHandler | None = None
        self._transport: WSTransport | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._joined: asyncio.Future[None] | None = None
        self._token = ""
        self._reason = "server_closed"
        self._closing = False
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self, url: str, token: str, timeout: float) -> None:
        self._joined = joined = asyncio.get_running_loop().create_future()
        self._token = token
        try:
            async with asyncio.timeout(timeout):
                await ws_connect(
                    lambda: _Frames(self), websocket_url(url), websocket_handshake_timeout=timeout,
                    enable_auto_pong=True, max_frame_size=16 * 1024 * 1024, logger_name="loadtest")
                await joined
        except BaseException as exc:
            if self._transport is not None:
                self._transport.disconnect(graceful=False)
            if isinstance(exc, ClientFailure):
                raise
            if isinstance(exc, (Exception, asyncio.TimeoutError)):
                raise ClientFailure(reason_of(exc), str(exc)) from None
            raise
        self._connected = True

    def on_text(self, payload: memoryview) -> None:
        """A text frame other than a live ``event`` (``_Frames`` delivers those itself)."""
        frame = bytes(payload).decode()
        if frame == "2":
            self._send(PONG_FRAME)
        elif not self._connected:
            self._handshake(frame)
        elif not self._dispatch(frame):
            self._reason = "server_disconnect"
            if self._transport is not None:
                self._transport.disconnect()

    def _handshake(self, frame: str) -> None:
        """Engine.IO open, then our Socket.IO CONNECT and the server's answer."""
        joined = self._joined
        if joined is None or joined.done():
            return
        try:
            if frame.startswith("0"):
                decode_open(frame)
                self._send(encode_connect({"token": self._token}))
                return
            packet = decode_message(frame)
        except ProtocolError as exc:
            joined.set_exception(exc)
            return
        if packet.type is SioType.CONNECT:
            joined.set_result(None)
        elif packet.type is SioType.CONNECT_ERROR:
            joined.set_exception(_refusal(packet.data))
        else:
            joined.set_exception(ProtocolError(f"unexpected packet during connect: {frame[:60]!r}"))

    def attached(self, transport: WSTransport) -> None:
        self._transport = transport

    def closed_by_server(self, code: int) -> None:
        if not self._closing and code != 1000:
            self._reason = f"closed_{code}"

    def _send(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_disconnected:
            self._transport.send(WSMsgType.TEXT, text.encode())

    async def send_call(self, event: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        transport = self._transport
        if transport is None or not self._connected or transport.is_disconnected:
            raise ClientFailure("not_connected")
        ack_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        future.add_done_callback(lambda f: self._forget(ack_id, f))
        transport.send(WSMsgType.TEXT, encode_event(event, data, ack_id=ack_id).encode())
        return future

    def _forget(self, ack_id: int, future: asyncio.Future[Any]) -> None:
        self._acks.pop(ack_id, None)
        if not future.cancelled():
            future.exception()  # marks it retrieved: a caller that gave up must not log a warning

    async def close(self) -> None:
        self._closing = True
        transport = self._transport
        if transport is None:
            return
        if not transport.is_disconnected:
            if self._connected:
                self._send(DISCONNECT_FRAME)
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await transport.wait_disconnected()
        except TimeoutError:
            transport.disconnect(graceful=False)

    def _dispatch(self, frame: str) -> bool:
        """Handle a non-event frame; False when the server ended the session."""
        if frame[0] == "1":  # Engine.IO close
            return False
        packet = decode_message(frame)
        if packet.type is SioType.ACK and packet.ack_id is not None:
            future = self._acks.get(packet.ack_id)
            if future is not None and not future.done():
                args = packet.args
                future.set_result(args[0] if args else None)
        elif packet.type is SioType.EVENT and packet.event == "event" and self.on_event is not None:
            self.on_event(packet.args[0])
        elif packet.type is SioType.DISCONNECT:
            return False
        return True

    def disconnected(self) -> None:
        joined = self._joined
        if joined is not None and not joined.done():
            joined.set_exception(ClientFailure("closed_during_handshake", "websocket closed"))
        was_connected, self._connected = self._connected, False
        for future in list(self._acks.values()):
            if not future.done():
                future.set_exception(ClientFailure("disconnected", self._reason))
        if was_connected and not self._closing and self.on_close is not None:
            self.on_close(self._reason)


def _refusal(data: Any) -> ClientFailure:
    """The reason of a Socket.IO CONNECT_ERROR: Switchboard's ``data.code`` when present."""
    if isinstance(data, dict):
        # python-socketio sends the refusal's data itself; Node's server wraps it as {message, data}
        nested = data.get("data")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else data
        if isinstance(inner.get("code"), str):
            return ClientFailure(inner["code"], str(inner.get("message", "")))
        return ClientFailure("connect_refused", str(data.get("message", "")))
    return ClientFailure("connect_refused", str(data))
