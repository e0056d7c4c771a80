"""``create_app(settings)``: builds every runtime object; nothing lives at module level."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from channels.broker import open_broker
from channels.control import ControlBus
from channels.fanout import Fanout, after_commit
from channels.limits import KeyedBuckets
from channels.models import JsonObject, Principal
from channels.namespaces import NamespaceRules
from channels.presence import open_presence
from channels.presence.tracker import PresenceTracker
from channels.relay import BrokerRelay
from channels.retention import Retention
from channels.service import ChannelService, ServiceLimits
from channels.store import open_store
from channels.store.writer import GroupCommitWriter
from handlers.connections import Connections
from handlers.expiry import ExpiryClock
from handlers.server_api import DISCONNECT_USER
from handlers.sockets import SocketHandlers

from . import __version__, keys
from .auth import TokenVerifier, handshake_token
from .config import Settings
from .delivery import QueueDelivery, SendLimits
from .inline import InlineCalls
from .lifecycle import add_lifecycle, add_realtime_lifecycle
from .metrics import PrometheusTelemetry, StateCollector
from .middleware import (
    auth_middleware,
    context_middleware,
    cors_middleware,
    problem_middleware,
    rate_limit_middleware,
)
from .routes import add_routes
from .sockets import SioControl, SlowConsumers, build_sio, client_ip


def create_app(settings: Settings) -> web.Application:
    """The whole server as an aiohttp application; resources start in its cleanup contexts."""
    rules = NamespaceRules.load(settings.channels_config, payload_cap=settings.max_payload_bytes)
    verifier = TokenVerifier(settings)
    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    store = open_store(settings.database_url, **_store_options(settings))
    broker = open_broker(settings.redis_url, prefix=settings.redis_prefix)
    presence = open_presence(settings.redis_url, prefix=settings.redis_prefix, timeout=settings.presence_timeout)
    sio = build_sio(settings)
    sio.protocol_errors.count = telemetry.protocol_error
    sio.eio.refused = telemetry.refused

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
    control = ControlBus(broker, fanout)
    tracker = PresenceTracker(presence, rules, relay.push_message)

    writer = GroupCommitWriter(
        store,
        max_batch=settings.writer_max_batch,
        max_pending=settings.writer_max_pending,
        on_commit=after_commit(fanout, relay),
        telemetry=telemetry,
    )
    limits = ServiceLimits(history_max_limit=settings.history_max_limit, history_max_bytes=settings.history_page_bytes,
                           sync_max_channels=settings.sync_max_channels,
                           batch_max_events=settings.server_batch_max_events)
    service = ChannelService(store, writer, fanout, rules, tracker, limits, telemetry)

    def authenticate(auth: object, environ: Mapping[str, Any]) -> Principal:
        return verifier.verify(handshake_token(auth, environ))

    socket_control = SioControl(sio)
    connections = Connections(
        service, authenticate, socket_control, limits=settings.limits(),
        client_ip=partial(client_ip, trust_forwarded_for=settings.trust_forwarded_for),
        expiry=ExpiryClock(lead=settings.token_expiry_warning, grace=settings.token_expiry_grace),
    )

    async def disconnect_user(message: JsonObject) -> None:
        await connections.disconnect_user(str(message.get("user", "")))

    control.on(DISCONNECT_USER, disconnect_user)
    sockets = SocketHandlers(service, connections, verifier.verify, telemetry)
    inline = InlineCalls(sio)
    sio.eio.inline = inline  # websocket readers hand it the calls it knows (publish)
    sockets.register(sio, inline)
    slow_consumers = SlowConsumers(sio, sockets, grace=settings.send_queue_close_grace)
    registry.register(_state_gauges(sockets, fanout))

    app = web.Application(
        middlewares=[
            context_middleware(settings.instance_id),
            cors_middleware(settings.cors_origins),
            problem_middleware,
            auth_middleware(verifier),
            rate_limit_middleware(_rest_buckets(settings)),
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
    app[keys.SOCKET_CONTROL] = socket_control
    app[keys.CONTROL] = control
    app[keys.METRICS] = registry
    sio.attach(app)
    add_routes(app, version=__version__)
    retention = Retention(store, rules, interval=settings.retention_interval_seconds, telemetry=telemetry)
    add_lifecycle(app, store=store, broker=broker, fanout=fanout, relay=relay, writer=writer,
                  retention=retention, listener=control)
    add_realtime_lifecycle(app, control=control, presence=presence, tracker=tracker, connections=connections)
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


def _rest_buckets(settings: Settings) -> KeyedBuckets | None:
    if settings.limit_rest_rate <= 0:
        return None
    return KeyedBuckets(settings.limit_rest_rate, settings.limit_rest_burst)
