"""The domain wired as the server wires it, in this process: SQLite, the memory broker
and presence, and ``RecordingDelivery`` as the transport. No server process, no sockets.

Two ``Instance`` objects on one ``MemoryHub`` and one SQLite file behave like two
instances sharing PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from channels.broker.memory import MemoryBroker, MemoryHub
from channels.fanout import Fanout, after_commit
from channels.namespaces import NamespaceRules
from channels.presence.memory import MemoryPresence, MemoryPresenceHub
from channels.presence.tracker import PresenceTracker
from channels.relay import BrokerRelay
from channels.service import ChannelService
from channels.store import open_store
from channels.store.writer import GroupCommitWriter
from tests.support.fakes import CountingTelemetry, RecordingDelivery


class Instance:
    """One instance's domain; ``start`` and ``close`` in the server's lifecycle order."""

    def __init__(self, db: Path, hub: MemoryHub, presence_hub: MemoryPresenceHub,
                 delivery: RecordingDelivery | None = None) -> None:
        self.telemetry = CountingTelemetry()
        self.store = open_store(f"sqlite:///{db}")
        self.broker = MemoryBroker(hub)
        self.presence = MemoryPresence(presence_hub)
        self.delivery = delivery or RecordingDelivery()
        self.rules = NamespaceRules.load(None)
        self.fanout = Fanout(self.store, self.broker, self.delivery, gap_timeout=0.02,
                             position_check_interval=0.2, telemetry=self.telemetry)
        self.relay = BrokerRelay(self.broker, telemetry=self.telemetry)
        self.tracker = PresenceTracker(self.presence, self.rules, self.relay.push_message)
        self.writer = GroupCommitWriter(self.store, on_commit=after_commit(self.fanout, self.relay),
                                        telemetry=self.telemetry)
        self.service = ChannelService(self.store, self.writer, self.fanout, self.rules, self.tracker,
                                      telemetry=self.telemetry)

    async def start(self) -> None:
        await self.store.start()
        await self.broker.start(self.fanout)
        await self.fanout.start()
        await self.relay.start()
        await self.writer.start()
        await self.presence.start(self.tracker)

    async def close(self) -> None:
        await self.presence.close()
        await self.writer.close()
        await self.relay.close()
        await self.fanout.close()
        await self.broker.close()
        await self.store.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (sized for a loaded machine); fail otherwise."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)
