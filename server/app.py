"""``create_app(settings)``: builds every runtime object; nothing lives at module level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from channels.broker import open_broker
from channels.fanout import Fanout
from channels.models import Event, Principal
from channels.namespaces import NamespaceRules
from channels.relay import BrokerRelay
from channels.retention import Retention
from channels.service import ChannelService, ServiceLimits
from channels.store import open_store
from channels.store.writer import GroupCommitWriter
from handlers.sockets import SocketHandlers

from . import __version__, keys
from .auth import TokenVerifier, handshake_token
from .config import Settings
from .lifecycle import add_lifecycle
from .metrics import PrometheusTelemetry, StateCollector
from .middleware import auth_middleware, context_middleware, cors_middleware, problem_middleware
from .routes import add_routes
from .delivery import QueueDelivery, SendLimits
from .sockets import SlowConsumers, build_sio


def create_app(settings: Settings) -> web.Application:
    """The whole server as an aiohttp application; resources start in its cleanup contexts."""
    rules = NamespaceRules.load(settings.channels_config, payload_cap=settings.max_payload_bytes)
    verifier = TokenVerifier(settings)
    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    store = open_store(settings.database_url, **_store_options(settings))
    broker = open_broker(settings.redis_url, prefix=settings.redis_prefix)
    sio = build_sio(settings)

    def on_slow_consumer(sid: str) -> None:
        slow_consumers(sid)  # bound below, before the server accepts any connection

    delivery = QueueDelivery(
        sio,
        SendLimits(settings.send_queue_max_messages, settings.send_queue_max_bytes),
        on_slow_consumer=on_slow_consumer,
    )
    fanout = Fanout(
        store,
        broker,
        delivery,
        gap_timeout=settings.gap_timeout_ms / 1000,
        recovery_max_events=settings.recovery_max_events,
        telemetry=telemetry,
    )
    relay = BrokerRelay(broker, telemetry=telemetry)

    def on_commit(events: Sequence[Event]) -> None:
        fanout.on_local_commit(events)
        relay.push(events)

    writer = GroupCommitWriter(
        store,
        max_batch=settings.writer_max_batch,
        max_pending=settings.writer_max_pending,
        on_commit=on_commit,
        telemetry=telemetry,
    )
    limits = ServiceLimits(history_max_limit=settings.history_max_limit, sync_max_channels=settings.sync_max_channels)
    service = ChannelService(store, writer, fanout, rules, limits, telemetry)

    def authenticate(auth: object, environ: Mapping[str, Any]) -> Principal:
        return verifier.verify(handshake_token(auth, environ))

    sockets = SocketHandlers(service, authenticate, telemetry)
    sockets.register(sio)
    slow_consumers = SlowConsumers(sio, sockets)
    registry.register(_state_gauges(sockets, fanout))

    app = web.Application(
        middlewares=[
            context_middleware(settings.instance_id),
            cors_middleware(settings.cors_origins),
            problem_middleware,
            auth_middleware(verifier),
        ],
        client_max_size=settings.transport_max_message_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.STORE] = store
    app[keys.BROKER] = broker
    app[keys.SERVICE] = service
    app[keys.VERIFIER] = verifier
    app[keys.SIO] = sio
    app[keys.SOCKETS] = sockets
    app[keys.METRICS] = registry
    sio.attach(app)
    add_routes(app, version=__version__)
    retention = Retention(store, rules, interval=settings.retention_interval_seconds, telemetry=telemetry)
    add_lifecycle(app, store=store, broker=broker, fanout=fanout, relay=relay, writer=writer, retention=retention)
    return app


def _state_gauges(sockets: SocketHandlers, fanout: Fanout) -> StateCollector:
    return StateCollector({
        "switchboard_connections": ("Open Socket.IO connections", lambda: len(sockets.connections)),
        "switchboard_subscriptions": (
            "Channel subscriptions of open connections",
            lambda: sum(len(c.channels) for c in sockets.connections.values()),
        ),
        "switchboard_live_channels": ("Channels with at least one local subscriber", fanout.live_channels),
    })


def _store_options(settings: Settings) -> dict[str, Any]:
    if settings.database_url.startswith(("postgresql:", "postgres:")):
        return {"min_size": settings.db_pool_min, "max_size": settings.db_pool_max}
    return {}
