"""``SimClient`` over python-socketio's ``AsyncClient`` (``--client sio``).

Kept to measure the lean client against (docs/BENCHMARKS.md) and as a
reference implementation of the protocol: if the two disagree about a server,
one of them has a bug. Each ``AsyncClient`` owns an Engine.IO client with its
own aiohttp session and background tasks, which is why it costs more memory
and CPU per connection than ``LeanClient``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import socketio

from .client import ClientFailure, CloseHandler, EventHandler, SimClient, reason_of


class SioClient(SimClient):
    """A ``SimClient`` backed by ``socketio.AsyncClient`` (websocket transport, no reconnection)."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        # the shared session is not used: AsyncClient makes its own per connection
        del session
        self.on_event: EventHandler | None = None
        self.on_close: CloseHandler | None = None
        self._sio = socketio.AsyncClient(reconnection=False)
        self._pending: set[asyncio.Future[Any]] = set()
        self._refusal: ClientFailure | None = None
        self._closing = False
        self._sio.on("event", self._event)
        self._sio.on("connect_error", self._connect_error)
        self._sio.on("disconnect", self._disconnect)

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected)

    def _event(self, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(payload)

    def _connect_error(self, data: Any = None) -> None:
        code = None
        if isinstance(data, dict):
            inner = data.get("data", data)
            code = inner.get("code") if isinstance(inner, dict) else None
        self._refusal = ClientFailure(code if isinstance(code, str) else "connect_refused", str(data))

    def _disconnect(self, *reason: Any) -> None:
        for future in list(self._pending):
            if not future.done():
                future.set_exception(ClientFailure("disconnected", str(reason)))
        if not self._closing and self.on_close is not None:
            self.on_close("server_closed")

    async def connect(self, url: str, token: str, timeout: float) -> None:
        try:
            await self._sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise self._refusal from None
            cause = exc.__cause__ or exc.__context__
            raise ClientFailure(reason_of(cause) if cause else "connect_failed", str(exc)) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ClientFailure(reason_of(exc), str(exc)) from None

    async def send_call(self, event: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        if not self._sio.connected:
            raise ClientFailure("not_connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        future.add_done_callback(self._forget)

        def acked(*args: Any) -> None:
            if not future.done():
                future.set_result(args[0] if args else None)

        try:
            await self._sio.emit(event, data, callback=acked)
        except socketio.exceptions.BadNamespaceError:
            future.cancel()
            raise ClientFailure("disconnected") from None
        return future

    def _forget(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled():
            future.exception()

    async def close(self) -> None:
        self._closing = True
        if self._sio.connected:
            await self._sio.disconnect()
        await self._sio.shutdown()
