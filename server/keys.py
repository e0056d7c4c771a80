"""Typed application keys: how handlers and lifecycle reach the app's objects."""

from __future__ import annotations

import socketio
from aiohttp import web
from prometheus_client import CollectorRegistry

from channels.control import ControlBus
from channels.ports import Broker, EventStore
from channels.service import ChannelService
from handlers.sockets import SocketHandlers

from .auth import TokenVerifier
from .config import Settings
from .sockets import SioControl

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", EventStore)
BROKER = web.AppKey("broker", Broker)
SERVICE = web.AppKey("service", ChannelService)
VERIFIER = web.AppKey("verifier", TokenVerifier)
SIO = web.AppKey("sio", socketio.AsyncServer)
SOCKETS = web.AppKey("sockets", SocketHandlers)
CONTROL = web.AppKey("control", ControlBus)
SOCKET_CONTROL = web.AppKey("socket_control", SioControl)
METRICS = web.AppKey("metrics", CollectorRegistry)
