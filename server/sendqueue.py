"""Bounded per-socket send queues (promise 6) and the slow-consumer cut.

python-socketio hands every outgoing packet to its Engine.IO socket's queue,
which engineio makes with ``AsyncServer.create_queue()``: an unbounded
``asyncio.Queue``. A client that stops reading blocks the socket's writer in
aiohttp's drain, and the queue then grows with every broadcast. ``BoundedEngineIO``
overrides ``create_queue`` to hand out a ``BoundedSendQueue`` instead: when a
socket's backlog would exceed ``max_messages`` or ``max_bytes``, everything it
holds is dropped (freed), only the farewell packets (``closing {code:
slow_consumer}`` and a Socket.IO disconnect) are kept, nothing else is accepted,
and the socket is closed. If the client does not read its farewell within
``close_grace`` seconds its TCP connection is aborted, so a stalled peer cannot
pin a writer task and kernel buffers forever. The client reconnects and
recovers what it missed with ``subscribe {since}``.

A lone message larger than ``max_bytes`` is still accepted into an empty queue
(a big history page is not a backlog).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import engineio
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow_consumer"


@dataclass(frozen=True, slots=True)
class SendBounds:
    max_messages: int = 1000
    max_bytes: int = 1024 * 1024
    close_grace: float = 10.0


def _size(item: Any) -> int:
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, str | bytes) else 64


def _is_message(item: Any) -> bool:
    return item is not None and getattr(item, "packet_type", None) == eio_packet.MESSAGE


class BoundedSendQueue(asyncio.Queue[Any]):
    """An Engine.IO socket's outgoing queue with a bound on its backlog of messages."""

    def __init__(self, bounds: SendBounds, on_overflow: Callable[[BoundedSendQueue], None],
                 farewell: Callable[[], list[Any]]) -> None:
        super().__init__()
        self.bounds = bounds
        self._on_overflow = on_overflow
        self._farewell = farewell
        self.messages = 0
        self.bytes = 0
        self.sealed = False
        self._roomy = asyncio.Event()
        self._roomy.set()

    def put_nowait(self, item: Any) -> None:
        if _is_message(item):
            if self.sealed:
                return  # the socket is being closed for falling behind: nothing more for it
            if self.messages >= self.bounds.max_messages or (
                self.messages and self.bytes + _size(item) > self.bounds.max_bytes
            ):
                self._overflow()
                return
        super().put_nowait(item)

    async def wait_roomy(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the backlog is below half of both bounds."""
        if not self._roomy.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._roomy.wait()
            except TimeoutError:
                pass

    def _overflow(self) -> None:
        self.sealed = True
        log.warning("slow consumer: %d messages (%d bytes) queued; closing", self.messages, self.bytes)
        queue: deque[Any] = self._queue  # type: ignore[attr-defined]
        keep_sentinel = None in queue
        dropped = len(queue)
        queue.clear()
        self.messages = self.bytes = 0
        for _ in range(dropped):
            self.task_done()  # what was dropped will never be sent; join() must not wait for it
        for item in self._farewell():
            super().put_nowait(item)
        if keep_sentinel:
            super().put_nowait(None)
        self._roomy.set()
        self._on_overflow(self)

    def _put(self, item: Any) -> None:
        super()._put(item)
        if _is_message(item):
            self.messages += 1
            self.bytes += _size(item)
            if self.messages * 2 > self.bounds.max_messages or self.bytes * 2 > self.bounds.max_bytes:
                self._roomy.clear()

    def _get(self) -> Any:
        item = super()._get()
        if _is_message(item):
            self.messages -= 1
            self.bytes -= _size(item)
            if self.messages * 2 <= self.bounds.max_messages and self.bytes * 2 <= self.bounds.max_bytes:
                self._roomy.set()
        return item


class _TrackedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp WebSocket, remembering each socket's TCP transport (to abort it)."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        server, socket = self.server, getattr(self.handler, "__self__", None)
        sid = getattr(socket, "sid", None)
        if sid is not None:
            server.tcp_transports[sid] = environ["aiohttp.request"].transport
        try:
            return await super().__call__(environ)
        finally:
            if sid is not None:
                server.tcp_transports.pop(sid, None)


class BoundedEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """engineio's server with bounded send queues; ``configure`` before the first connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds: SendBounds | None = None
        self.farewell: Callable[[], list[Any]] = list
        self.tcp_transports: dict[str, asyncio.BaseTransport] = {}
        self._cuts: set[asyncio.Task[None]] = set()
        # a per-server copy of the driver table (the module's dict is shared)
        driver: dict[str, Any] = getattr(self, "_async")
        setattr(self, "_async", {**driver, "websocket": _TrackedWebSocket})

    def configure(self, bounds: SendBounds, farewell: Callable[[], list[Any]]) -> None:
        self.bounds = bounds
        self.farewell = farewell

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        if self.bounds is None:
            return super().create_queue(*args, **kwargs)
        return BoundedSendQueue(self.bounds, self._overflowed, self.farewell)

    async def wait_roomy(self, sid: str, timeout: float) -> None:
        socket = self.sockets.get(sid)
        if socket is not None and isinstance(socket.queue, BoundedSendQueue):
            await socket.queue.wait_roomy(timeout)

    async def close_now(self, sid: str, reason: str) -> None:
        """Close a socket without waiting for its queue to drain (``disconnect`` would)."""
        socket = self.sockets.get(sid)
        if socket is not None and not socket.closed:
            await socket.close(wait=False, abort=False, reason=reason)

    def _overflowed(self, queue: BoundedSendQueue) -> None:
        for sid, socket in self.sockets.items():
            if socket.queue is queue:
                task = asyncio.get_running_loop().create_task(self._cut(sid, queue.bounds.close_grace))
                self._cuts.add(task)
                task.add_done_callback(self._cuts.discard)
                return

    async def _cut(self, sid: str, grace: float) -> None:
        try:
            await self.close_now(sid, SLOW_CONSUMER)
        except Exception:
            log.exception("closing slow consumer %s failed", sid)
        await asyncio.sleep(grace)
        transport = self.tcp_transports.get(sid)
        if transport is not None and not transport.is_closing():
            log.info("slow consumer %s did not read its farewell in %.0fs: aborting", sid, grace)
            transport.abort()  # type: ignore[attr-defined]

    async def shutdown(self) -> None:
        for task in list(self._cuts):
            task.cancel()
        await asyncio.gather(*self._cuts, return_exceptions=True)
        await super().shutdown()
