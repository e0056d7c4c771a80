"""The HTTP routes, declared once: aiohttp is wired from this table and the
OpenAPI document (server/openapi.py) is generated from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from handlers.rest import RestHandlers, health_handlers
from handlers.schemas import (
    BatchPublishBody,
    BatchPublishOut,
    ChannelStatsOut,
    DisconnectOut,
    HealthOut,
    HistoryOut,
    HistoryQuery,
    PresenceOut,
    PublishBody,
    PublishOut,
    ReadyOut,
    SyncBody,
    SyncOut,
)
from handlers.server_api import ServerApi

from . import keys
from .metrics import metrics_handler

API = "/api/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One HTTP operation. ``responses`` maps success statuses to their body model
    (``None``: not JSON); ``errors`` are the problem+json statuses it can answer."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    auth: bool = True
    tag: str = "events"


def api_routes(app: web.Application) -> list[Route]:
    rest = RestHandlers(app[keys.SERVICE])
    server = ServerApi(app[keys.SERVICE], app[keys.CONTROL], max_body_bytes=app[keys.SETTINGS].server_batch_max_bytes)
    healthz, readyz = health_handlers(app[keys.STORE], app[keys.BROKER])
    read_errors = (400, 401, 403, 429, 503)
    server_errors = (400, 401, 403, 429, 503)
    routes = [
        Route("GET", API + "/channels/{channel}/events", rest.history, "listEvents",
              "A page of a channel's history, with its head and the oldest retained seq",
              {200: HistoryOut}, query=HistoryQuery, errors=read_errors),
        Route("POST", API + "/channels/{channel}/events", rest.publish, "publishEvent",
              "Publish one event, durable before the response; 201 new, 200 duplicate",
              {201: PublishOut, 200: PublishOut}, body=PublishBody,
              headers={"Idempotency-Key": "client_msg_id for retries (1-128 characters). When the body "
                                          "carries client_msg_id too, the two must be equal: a request "
                                          "where they differ is refused with 400 bad_request"},
              errors=(400, 401, 403, 413, 429, 503)),
        Route("POST", API + "/sync", rest.sync, "sync",
              "Missed events for each {channel: last_seq}", {200: SyncOut}, body=SyncBody, errors=read_errors),
        Route("GET", API + "/channels/{channel}/presence", rest.presence, "presence",
              "Members of a presence channel, across instances (a user with several connections once)",
              {200: PresenceOut}, errors=(*read_errors, 404), tag="presence"),
        Route("POST", API + "/server/publish", server.publish, "serverPublish",
              "Server role: publish a batch of events to any channels, each durable and ordered",
              {200: BatchPublishOut}, body=BatchPublishBody, errors=(*server_errors, 413), tag="server"),
        Route("POST", API + "/server/users/{user}/disconnect", server.disconnect_user, "serverDisconnectUser",
              "Server role: close every connection of a user on every instance",
              {202: DisconnectOut}, errors=server_errors, tag="server"),
        Route("GET", API + "/server/channels/{channel}/presence", server.presence, "serverPresence",
              "Server role: members of any presence channel", {200: PresenceOut}, errors=(*server_errors, 404),
              tag="server"),
        Route("GET", API + "/server/channels/{channel}/stats", server.stats, "serverChannelStats",
              "Server role: head seq, retained range and subscribers of a channel",
              {200: ChannelStatsOut}, errors=server_errors, tag="server"),
        Route("GET", "/healthz", healthz, "health", "The process answers", {200: HealthOut}, auth=False, tag="ops"),
        Route("GET", "/readyz", readyz, "ready", "Store and broker reachable (503 names the one that is not)",
              {200: ReadyOut, 503: ReadyOut}, auth=False, tag="ops"),
    ]
    if app[keys.SETTINGS].metrics_enabled:
        routes.append(Route("GET", "/metrics", metrics_handler(app[keys.METRICS]), "metrics",
                            "Prometheus metrics (text exposition format)", {200: None}, auth=False, tag="ops"))
    return routes


def add_routes(app: web.Application, *, version: str) -> list[Route]:
    from .openapi import openapi_route

    routes = api_routes(app)
    routes.append(openapi_route(routes, version=version, limits=app[keys.SERVICE].limits))
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    return routes
