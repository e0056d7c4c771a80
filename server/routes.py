"""URL routes of the REST API."""

from __future__ import annotations

from aiohttp import web

from handlers.rest import RestHandlers, health_handlers
from handlers.server_api import ServerApi

from . import keys

API = "/api/v1"


def add_routes(app: web.Application) -> None:
    rest = RestHandlers(app[keys.SERVICE])
    healthz, readyz = health_handlers(app[keys.STORE], app[keys.BROKER])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(API + "/channels/{channel}/events", rest.history)
    app.router.add_post(API + "/channels/{channel}/events", rest.publish)
    app.router.add_post(API + "/sync", rest.sync)
    app.router.add_get(API + "/channels/{channel}/presence", rest.presence)
    server = ServerApi(app[keys.SERVICE], app[keys.CONTROL], max_body_bytes=app[keys.SETTINGS].server_batch_max_bytes)
    app.router.add_post(API + "/server/publish", server.publish)
    app.router.add_post(API + "/server/users/{user}/disconnect", server.disconnect_user)
    app.router.add_get(API + "/server/channels/{channel}/presence", server.presence)
    app.router.add_get(API + "/server/channels/{channel}/stats", server.stats)
