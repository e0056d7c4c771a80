"""The simulated client: one Socket.IO connection, and the lean implementation of it.

``SimClient`` is what scenarios drive. ``LeanClient`` speaks Engine.IO 4 /
Socket.IO 5 directly over one aiohttp websocket: per connection it holds the
websocket, one reader task and a dict of pending acks, and it decodes a
received event with one ``orjson.loads``. ``loadtest.sioclient`` offers the
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
_EVENT_PREFIX = '42["event",'
# A dead server must not make closing 10,000 clients take 10 s each (aiohttp's default).
CLOSE_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)


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
    except asyncio.TimeoutError:
        raise ClientFailure("ack_timeout", f"no ack to {event} in {timeout:g}s") from None


def reason_of(exc: BaseException) -> str:
    """The short reason for a failed connect or call."""
    if isinstance(exc, ClientFailure):
        return exc.reason
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"http_{exc.status}"
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


class LeanClient(SimClient):
    """A minimal Socket.IO client over one aiohttp websocket (websocket transport only)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.on_event: EventHandler | None = None
        self.on_close: CloseHandler | None = None
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._closing = False
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self, url: str, token: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._handshake(url, token)
        except BaseException as exc:
            if self._ws is not None:
                await self._ws.close()
            if isinstance(exc, ClientFailure):
                raise
            if isinstance(exc, (Exception, asyncio.TimeoutError)):
                raise ClientFailure(reason_of(exc), str(exc)) from None
            raise
        self._connected = True
        self._reader = asyncio.create_task(self._read_loop())

    async def _handshake(self, url: str, token: str) -> None:
        self._ws = ws = await self._session.ws_connect(
            websocket_url(url), autoping=True, heartbeat=None, compress=0, max_msg_size=16 * 1024 * 1024,
            timeout=CLOSE_TIMEOUT,
        )
        decode_open(await self._text(ws))
        await ws.send_str(encode_connect({"token": token}))
        while True:
            frame = await self._text(ws)
            if frame == "2":  # a ping may precede the answer on a slow server
                await ws.send_str(PONG_FRAME)
                continue
            packet = decode_message(frame)
            if packet.type is SioType.CONNECT:
                return
            if packet.type is SioType.CONNECT_ERROR:
                raise _refusal(packet.data)
            raise ProtocolError(f"unexpected packet during connect: {frame[:60]!r}")

    @staticmethod
    async def _text(ws: aiohttp.ClientWebSocketResponse) -> str:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise ClientFailure("closed_during_handshake", f"websocket closed ({ws.close_code})")
        raise ProtocolError(f"unexpected websocket message {msg.type!r}")

    async def send_call(self, event: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        ws = self._ws
        if ws is None or not self._connected:
            raise ClientFailure("not_connected")
        ack_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        future.add_done_callback(lambda f: self._forget(ack_id, f))
        try:
            await ws.send_str(encode_event(event, data, ack_id=ack_id))
        except (ConnectionError, aiohttp.ClientError) as exc:
            future.cancel()
            raise ClientFailure("disconnected", str(exc)) from None
        return future

    def _forget(self, ack_id: int, future: asyncio.Future[Any]) -> None:
        self._acks.pop(ack_id, None)
        if not future.cancelled():
            future.exception()  # marks it retrieved: a caller that gave up must not log a warning

    async def close(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                if self._connected:
                    await ws.send_str(DISCONNECT_FRAME)
                await ws.close()
            except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError):
                pass
        if self._reader is not None:
            await self._reader

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        reason = "server_closed"
        try:
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        reason = "websocket_error"
                    break
                frame: str = msg.data
                if frame.startswith(_EVENT_PREFIX) and self.on_event is not None:
                    self.on_event(orjson.loads(frame[len(_EVENT_PREFIX):-1]))
                elif frame == "2":
                    await ws.send_str(PONG_FRAME)
                elif not self._dispatch(frame):
                    reason = "server_disconnect"
                    break
        except (ConnectionError, aiohttp.ClientError, ProtocolError, orjson.JSONDecodeError) as exc:
            reason = reason_of(exc)
        finally:
            self._finish(reason)

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

    def _finish(self, reason: str) -> None:
        self._connected = False
        for future in list(self._acks.values()):
            if not future.done():
                future.set_exception(ClientFailure("disconnected", reason))
        if not self._closing:
            if self._ws is not None and not self._ws.closed:
                asyncio.get_running_loop().create_task(self._ws.close())
            if self.on_close is not None:
                self.on_close(reason)


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
