"""URL routes of the REST API."""

from __future__ import annotations

from aiohttp import web

from handlers.rest import RestHandlers, health_handlers

from . import keys
from .metrics import metrics_handler

API = "/api/v1"


def add_routes(app: web.Application) -> None:
    rest = RestHandlers(app[keys.SERVICE])
    healthz, readyz = health_handlers(app[keys.STORE], app[keys.BROKER])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if app[keys.SETTINGS].metrics_enabled:
        app.router.add_get("/metrics", metrics_handler(app[keys.METRICS]))
    app.router.add_get(API + "/channels/{channel}/events", rest.history)
    app.router.add_post(API + "/channels/{channel}/events", rest.publish)
    app.router.add_post(API + "/sync", rest.sync)
