"""One cleanup context per resource, in dependency order (aiohttp closes them in reverse).

Start: store -> broker (+ fan-out) -> relay -> writer -> retention -> control
channel -> presence -> token-expiry watch.
Stop (SIGTERM): aiohttp stops listening; ``drain`` (on_shutdown) refuses new
publishes, waits for the writer to commit and ack what it holds, then closes
client connections in batches with ``closing {code: shutdown}``; then the
contexts close in reverse: expiry watch, presence (its leaves go to the relay),
control channel, retention, writer, relay (publishes what is queued), fan-out
and broker, store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from channels.control import ControlBus
from channels.errors import AppError, ErrorCode
from channels.fanout import Fanout
from channels.ports import Broker, BrokerListener, EventStore, Presence, PresenceListener
from channels.relay import BrokerRelay
from channels.retention import Retention
from channels.store.writer import GroupCommitWriter
from handlers.connections import Connections

from . import keys

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


async def disconnect_all(app: web.Application, reason: str) -> None:
    """Close every connection, ``drain_batch_size`` at a time, so the instances
    they reconnect to are not hit by all of them in the same instant. Only the
    transport is closed: clients reconnect (elsewhere) and recover with ``since``."""
    settings = app[keys.SETTINGS]
    control, sockets = app[keys.SOCKET_CONTROL], app[keys.SOCKETS]
    notice = AppError(ErrorCode.SHUTDOWN, "this instance is shutting down; reconnect and resubscribe with since")
    sids = list(sockets.connections)
    size = settings.drain_batch_size
    for start in range(0, len(sids), size):
        if start:
            await asyncio.sleep(settings.drain_batch_interval_ms / 1000)
        batch = sids[start : start + size]
        marked = [sid for sid in batch if sockets.mark_closing(sid, reason)]
        await asyncio.gather(*(control.close(sid, notice, reconnect=True) for sid in marked),
                             return_exceptions=True)
    if sids:
        log.info("closed %d connections (%s)", len(sids), reason)
