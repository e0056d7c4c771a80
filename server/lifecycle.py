"""One cleanup context per resource, in dependency order (aiohttp closes them in reverse).

Start: store -> broker (+ fan-out) -> relay -> writer -> retention.
Stop (SIGTERM): aiohttp stops listening; ``drain`` (on_shutdown) refuses new
publishes, waits for the writer to commit and ack what it holds, then closes
client connections in batches with reason ``shutdown``; then the contexts
close: retention, writer, relay (publishes what is queued), fan-out and
broker, store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from channels.fanout import Fanout
from channels.ports import Broker, EventStore
from channels.relay import BrokerRelay
from channels.retention import Retention
from channels.store.writer import GroupCommitWriter

from . import keys
from .sockets import close_connection

log = logging.getLogger(__name__)


def add_lifecycle(
    app: web.Application,
    *,
    store: EventStore,
    broker: Broker,
    fanout: Fanout,
    relay: BrokerRelay,
    writer: GroupCommitWriter,
    retention: Retention,
) -> None:
    async def store_ctx(_: web.Application) -> AsyncIterator[None]:
        await store.start()
        yield
        await store.close()

    async def broker_ctx(_: web.Application) -> AsyncIterator[None]:
        await broker.start(fanout)
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

    async def retention_ctx(_: web.Application) -> AsyncIterator[None]:
        await retention.start()
        yield
        await retention.close()

    async def drain(app: web.Application) -> None:
        settings = app[keys.SETTINGS]
        app[keys.SERVICE].draining = True
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await writer.flush()
                await disconnect_all(app, "shutdown")
        except TimeoutError:
            log.warning("drain did not finish within %.1fs; closing anyway", settings.shutdown_timeout)
        await app[keys.SIO].shutdown()

    app.cleanup_ctx.extend([store_ctx, broker_ctx, relay_ctx, writer_ctx, retention_ctx])
    app.on_shutdown.append(drain)


async def disconnect_all(app: web.Application, reason: str) -> None:
    """Close every connection, ``drain_batch_size`` at a time, so the instances
    they reconnect to are not hit by all of them in the same instant."""
    settings = app[keys.SETTINGS]
    sio, sockets = app[keys.SIO], app[keys.SOCKETS]
    sids = list(sockets.connections)
    size = settings.drain_batch_size
    for start in range(0, len(sids), size):
        if start:
            await asyncio.sleep(settings.drain_batch_interval_ms / 1000)
        batch = sids[start : start + size]
        await asyncio.gather(*(close_connection(sio, sockets, sid, reason) for sid in batch),
                             return_exceptions=True)
    if sids:
        log.info("closed %d connections (%s)", len(sids), reason)
