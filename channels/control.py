"""Instance-wide commands over the broker (e.g. "disconnect user X everywhere").

Every instance subscribes one extra broker channel, ``@control``, which no
Switchboard channel can be named (namespaces are ``[a-z0-9_-]``). The bus is the
broker's listener: it takes control messages and hands everything else to the
fan-out unchanged. Delivery is the broker's: every instance connected to it when
the command is sent receives it; a command is not retried or stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import codec
from .models import JsonObject
from .ports import Broker, BrokerListener

log = logging.getLogger(__name__)

CONTROL_CHANNEL = "@control"
Handler = Callable[[JsonObject], Awaitable[None]]


class ControlBus(BrokerListener):
    def __init__(self, broker: Broker, channels: BrokerListener) -> None:
        self._broker = broker
        self._channels = channels
        self._handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on(self, command: str, handler: Handler) -> None:
        """Run ``handler(message)`` on every instance for each ``send(command, ...)``."""
        self._handlers[command] = handler

    async def start(self) -> None:
        """Subscribe the control channel (the broker must be started with this bus)."""
        await self._broker.subscribe(CONTROL_CHANNEL)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send(self, command: str, **args: Any) -> None:
        """Publish a command to every instance, this one included. Raises
        ``BrokerUnavailable`` when the broker cannot take it."""
        await self._broker.publish([(CONTROL_CHANNEL, codec.encode_command({"cmd": command, **args}))])

    # -- BrokerListener ------------------------------------------------------------

    def on_message(self, channel: str, payload: bytes) -> None:
        if channel != CONTROL_CHANNEL:
            self._channels.on_message(channel, payload)
            return
        try:
            message = codec.loads(payload)
            handler = self._handlers[message["cmd"]]
        except (ValueError, TypeError, KeyError):
            log.warning("dropping unknown control message %r", payload[:200])
            return
        self._spawn(self._run(handler, message))

    def on_resubscribed(self) -> None:
        self._channels.on_resubscribed()

    async def _run(self, handler: Handler, message: JsonObject) -> None:
        try:
            await handler(message)
        except Exception:
            log.exception("control command %s failed", message.get("cmd"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
