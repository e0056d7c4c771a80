"""``create_app(settings)``: builds every runtime object; nothing lives at module level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aiohttp import web

from channels.broker import open_broker
from channels.control import ControlBus
from channels.fanout import Fanout
from channels.limits import KeyedBuckets
from channels.models import Event, JsonObject, Principal
from channels.namespaces import NamespaceRules
from channels.presence import open_presence
from channels.presence.tracker import PresenceTracker
from channels.relay import BrokerRelay
from channels.service import ChannelService, ServiceLimits
from channels.store import open_store
from channels.store.writer import GroupCommitWriter
from handlers.connections import Connections
from handlers.expiry import ExpiryClock
from handlers.server_api import DISCONNECT_USER
from handlers.sockets import SocketHandlers

from . import keys
from .auth import TokenVerifier, handshake_token
from .config import Settings
from .lifecycle import add_lifecycle, add_realtime_lifecycle
from .middleware import auth_middleware, cors_middleware, problem_middleware, rate_limit_middleware
from .routes import add_routes
from .sockets import SioControl, SocketDelivery, build_sio, client_ip


def create_app(settings: Settings) -> web.Application:
    """The whole server as an aiohttp application; resources start in its cleanup contexts."""
    rules = NamespaceRules.load(settings.channels_config, payload_cap=settings.max_payload_bytes)
    verifier = TokenVerifier(settings)
    store = open_store(settings.database_url, **_store_options(settings))
    broker = open_broker(settings.redis_url, prefix=settings.redis_prefix)
    presence = open_presence(settings.redis_url, prefix=settings.redis_prefix, timeout=settings.presence_timeout)
    sio = build_sio(settings)
    fanout = Fanout(
        store,
        broker,
        SocketDelivery(sio),
        gap_timeout=settings.gap_timeout_ms / 1000,
        recovery_max_events=settings.recovery_max_events,
    )
    relay = BrokerRelay(broker)
    control = ControlBus(broker, fanout)
    tracker = PresenceTracker(presence, rules, relay.push_message)

    def on_commit(events: Sequence[Event]) -> None:
        fanout.on_local_commit(events)
        relay.push(events)

    writer = GroupCommitWriter(
        store, max_batch=settings.writer_max_batch, max_pending=settings.writer_max_pending, on_commit=on_commit
    )
    limits = ServiceLimits(history_max_limit=settings.history_max_limit, sync_max_channels=settings.sync_max_channels,
                           batch_max_events=settings.server_batch_max_events)
    service = ChannelService(store, writer, fanout, rules, tracker, limits)

    def authenticate(auth: object, environ: Mapping[str, Any]) -> Principal:
        return verifier.verify(handshake_token(auth, environ))

    connections = Connections(
        service, authenticate, SioControl(sio), limits=settings.limits(),
        client_ip=partial(client_ip, trust_forwarded_for=settings.trust_forwarded_for),
        expiry=ExpiryClock(lead=settings.token_expiry_warning, grace=settings.token_expiry_grace),
    )

    async def disconnect_user(message: JsonObject) -> None:
        await connections.disconnect_user(str(message.get("user", "")))

    control.on(DISCONNECT_USER, disconnect_user)
    sockets = SocketHandlers(service, connections, verifier.verify)
    sockets.register(sio)

    app = web.Application(
        middlewares=[cors_middleware(settings.cors_origins), problem_middleware, auth_middleware(verifier),
                     rate_limit_middleware(_rest_buckets(settings))],
        client_max_size=settings.transport_max_message_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.STORE] = store
    app[keys.BROKER] = broker
    app[keys.SERVICE] = service
    app[keys.VERIFIER] = verifier
    app[keys.SIO] = sio
    app[keys.SOCKETS] = sockets
    app[keys.CONTROL] = control
    sio.attach(app)
    add_routes(app)
    add_lifecycle(app, store=store, broker=broker, fanout=fanout, relay=relay, writer=writer, listener=control)
    add_realtime_lifecycle(app, control=control, presence=presence, tracker=tracker, connections=connections)
    return app


def _store_options(settings: Settings) -> dict[str, Any]:
    if settings.database_url.startswith(("postgresql:", "postgres:")):
        return {"min_size": settings.db_pool_min, "max_size": settings.db_pool_max}
    return {}


def _rest_buckets(settings: Settings) -> KeyedBuckets | None:
    if settings.limit_rest_rate <= 0:
        return None
    return KeyedBuckets(settings.limit_rest_rate, settings.limit_rest_burst)
