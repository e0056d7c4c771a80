"""In-process broker: the embedded default, and a stand-in for Redis in tests.

Several ``MemoryBroker`` objects attached to one ``MemoryHub`` behave like
several instances sharing one Redis: each receives only the channels it
subscribed, in publish order, through its own listener task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..errors import BrokerUnavailable
from ..ports import Broker, BrokerListener

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 10_000


class MemoryHub:
    """The shared "server" of a group of ``MemoryBroker`` objects.

    Brokers attached with the same prefix see each other's messages, as Redis
    clients using the same key prefix would.
    """

    def __init__(self) -> None:
        self._members: dict[str, set[MemoryBroker]] = {}

    def attach(self, prefix: str, broker: MemoryBroker) -> None:
        self._members.setdefault(prefix, set()).add(broker)

    def detach(self, prefix: str, broker: MemoryBroker) -> None:
        members = self._members.get(prefix)
        if members is not None:
            members.discard(broker)
            if not members:
                del self._members[prefix]

    def publish(self, prefix: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """Hand every message to every attached broker of ``prefix``, in order."""
        members = tuple(self._members.get(prefix, ()))
        for channel, payload in messages:
            for broker in members:
                broker.offer(channel, payload)


class MemoryBroker(Broker):
    """``Broker`` within one process; see the module docstring.

    Delivery runs through a bounded queue drained by the listener task. When a
    listener falls ``max_pending`` messages behind, new messages are dropped
    and ``on_resubscribed`` is called before the next delivery, just as a
    Redis subscriber cut off for a full output buffer would reconnect: the
    fan-out then fills the gap from the store.
    """

    def __init__(
        self,
        hub: MemoryHub | None = None,
        *,
        prefix: str = "switchboard:",
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._hub = hub if hub is not None else MemoryHub()
        self._prefix = prefix
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=max_pending)
        self._wanted: set[str] = set()
        self._overflowed = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, listener: BrokerListener) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError("MemoryBroker.start() may be called once")
        self._hub.attach(self._prefix, self)
        self._task = asyncio.create_task(self._run(listener), name="memory-broker-listener")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub.detach(self._prefix, self)
        self._wanted.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def subscribe(self, channel: str) -> None:
        self._check_running()
        # Publishing checks the subscription synchronously, so the channel is
        # live as soon as it is in the set.
        self._wanted.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        self._hub.publish(self._prefix, messages)

    async def ping(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")

    def offer(self, channel: str, payload: bytes) -> None:
        """Called by the hub for every message published under this broker's prefix."""
        if channel not in self._wanted:
            return
        try:
            self._queue.put_nowait((channel, payload))
        except asyncio.QueueFull:
            if not self._overflowed:
                logger.warning("memory broker listener is %d messages behind; dropping", self._queue.maxsize)
            self._overflowed = True

    def _check_running(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        if self._task is None:
            raise RuntimeError("MemoryBroker.start() must be called first")

    async def _run(self, listener: BrokerListener) -> None:
        while True:
            channel, payload = await self._queue.get()
            if self._overflowed:
                self._overflowed = False
                _notify_resubscribed(listener)
            # A message queued before an unsubscribe is dropped, as the Redis
            # broker does with messages already in flight.
            if channel in self._wanted:
                _deliver(listener, channel, payload)


def _deliver(listener: BrokerListener, channel: str, payload: bytes) -> None:
    try:
        listener.on_message(channel, payload)
    except Exception:
        logger.exception("broker listener failed on a message in %r", channel)


def _notify_resubscribed(listener: BrokerListener) -> None:
    try:
        listener.on_resubscribed()
    except Exception:
        logger.exception("broker listener failed in on_resubscribed")
