"""One cleanup context per resource, in dependency order (aiohttp closes them in reverse).

Start: store -> broker (+ fan-out) -> relay -> writer -> control channel ->
       presence -> token-expiry watch.
Stop:  clients disconnected (on_shutdown) -> expiry watch stopped -> presence
       entries removed (leaves go to the relay) -> control channel closed ->
       writer flushed -> relay drained -> fan-out and broker closed -> store closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from channels.control import ControlBus
from channels.fanout import Fanout
from channels.ports import Broker, BrokerListener, EventStore, Presence, PresenceListener
from channels.relay import BrokerRelay
from channels.store.writer import GroupCommitWriter
from handlers.connections import Connections

from . import keys

log = logging.getLogger(__name__)
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
DISCONNECT_BATCH = 200


def add_lifecycle(
    app: web.Application,
    *,
    store: EventStore,
    broker: Broker,
    fanout: Fanout,
    relay: BrokerRelay,
    writer: GroupCommitWriter,
    listener: BrokerListener | None = None,
) -> None:
    async def store_ctx(_: web.Application) -> AsyncIterator[None]:
        await store.start()
        yield
        await store.close()

    async def broker_ctx(_: web.Application) -> AsyncIterator[None]:
        await broker.start(listener or fanout)
        await fanout.start()
        yield
        await fanout.close()
        await broker.close()

    async def relay_ctx(_: web.Application) -> AsyncIterator[None]:
        await relay.start()
        yield
        await relay.close()

    async def writer_ctx(_: web.Application) -> AsyncIterator[None]:
        await writer.start()
        yield
        await writer.close()

    app.cleanup_ctx.extend([store_ctx, broker_ctx, relay_ctx, writer_ctx])
    app.on_shutdown.append(disconnect_clients)


def add_realtime_lifecycle(
    app: web.Application,
    *,
    control: ControlBus,
    presence: Presence,
    tracker: PresenceListener,
    connections: Connections,
) -> None:
    """After ``add_lifecycle``: the control channel, presence and the token-expiry watch."""

    async def control_ctx(_: web.Application) -> AsyncIterator[None]:
        await control.start()
        yield
        await control.close()

    async def presence_ctx(_: web.Application) -> AsyncIterator[None]:
        await presence.start(tracker)
        yield
        await presence.close()

    async def connections_ctx(_: web.Application) -> AsyncIterator[None]:
        await connections.start()
        yield
        await connections.close()

    app.cleanup_ctx.extend([control_ctx, presence_ctx, connections_ctx])


async def disconnect_clients(app: web.Application) -> None:
    """Close every socket before pools close (``sio.shutdown()`` alone disconnects no one)."""
    sio = app[keys.SIO]
    sids = list(app[keys.SOCKETS].connections)
    for start in range(0, len(sids), DISCONNECT_BATCH):
        batch = sids[start : start + DISCONNECT_BATCH]
        await asyncio.gather(*(sio.disconnect(sid) for sid in batch), return_exceptions=True)
    if sids:
        log.info("disconnected %d clients", len(sids))
    await sio.shutdown()
