"""Hands committed events to the broker, in commit order, pipelined."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from . import codec
from .errors import describe
from .models import Event
from .ports import Broker
from .telemetry import NullTelemetry, Telemetry

log = logging.getLogger(__name__)


class BrokerRelay:
    """A single task drains committed events (and other channel messages, such as
    presence changes) to ``Broker.publish`` in batches, in the order pushed.

    The publisher's ack does not wait for this: the event is durable already,
    and an instance that misses a broker message fills the gap from the store
    when the next event or a broker reconnect reveals it. The backlog is
    bounded: past ``max_backlog`` events the oldest are dropped (logged and
    counted in ``Telemetry.relay_dropped``); other instances recover them from
    the store.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        max_backlog: int = 100_000,
        max_batch: int = 1000,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._broker = broker
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self._backlog: deque[tuple[str, bytes]] = deque()
        self._max_backlog = max_backlog
        self._max_batch = max_batch
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def push(self, events: Sequence[Event]) -> None:
        self._backlog.extend((e.channel, codec.encode_event(e)) for e in events)
        self._trim()

    def push_message(self, channel: str, payload: bytes) -> None:
        """Queue one already-encoded message for ``channel``'s broker channel."""
        self._backlog.append((channel, payload))
        self._trim()

    def _trim(self) -> None:
        overflow = len(self._backlog) - self._max_backlog
        if overflow > 0:
            for _ in range(overflow):
                self._backlog.popleft()
            self._telemetry.relay_dropped(overflow)
            log.warning("broker relay backlog full: dropped %d messages (the store keeps events)", overflow)
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Publish what is queued (best effort), then stop."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._backlog:
            try:
                await self._publish_batch()
            except Exception:
                log.warning("could not publish %d events at shutdown", len(self._backlog))

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._backlog:
                try:
                    await self._publish_batch()
                    delay = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._telemetry.broker_failed("publish")
                    log.warning("broker publish failed (%s); retrying in %.2fs", describe(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    async def _publish_batch(self) -> None:
        batch = [self._backlog[i] for i in range(min(self._max_batch, len(self._backlog)))]
        await self._broker.publish(batch)
        for _ in batch:
            self._backlog.popleft()
