"""The ``/api/v1`` REST handlers. Authentication and problem+json errors are
middleware (server/middleware.py); these read ``request["principal"]``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from channels.errors import AppError, ErrorCode, describe
from channels.models import Principal
from channels.ports import Broker, EventStore
from channels.service import ChannelService

from .acks import bad_request
from .schemas import (
    ClientMsgId,
    HistoryOut,
    HistoryQuery,
    PresenceOut,
    PublishBody,
    PublishOut,
    SyncBody,
    SyncChannelOut,
    SyncOut,
)

M = TypeVar("M", bound=BaseModel)
PRINCIPAL = "principal"
_CLIENT_MSG_ID: TypeAdapter[str] = TypeAdapter(ClientMsgId)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), status=status, content_type="application/json")


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise AppError(ErrorCode.MISSING_TOKEN, "a JWT is required")
    return found


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        return model.model_validate(orjson.loads(raw or b"null"))
    except orjson.JSONDecodeError as exc:
        raise AppError(ErrorCode.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise bad_request(exc) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise bad_request(exc) from None


def _valid_id(value: str) -> bool:
    """Whether ``value`` is a valid ``client_msg_id`` (the same rule as the body's)."""
    try:
        _CLIENT_MSG_ID.validate_python(value)
    except ValidationError:
        return False
    return True


class RestHandlers:
    def __init__(self, service: ChannelService) -> None:
        self._service = service

    async def history(self, request: web.Request) -> web.Response:
        """``GET /channels/{channel}/events?after=&before=&limit=``"""
        query = parse_query(request, HistoryQuery)
        page = await self._service.history(
            principal(request),
            request.match_info["channel"],
            after=query.after,
            before=query.before,
            limit=query.limit,
        )
        return json_response(
            HistoryOut.model_validate(
                {"events": [e.wire() for e in page.events], "head": page.head,
                 "first": page.first, "next_after": page.next_after, "epoch": page.epoch}
            )
        )

    async def publish(self, request: web.Request) -> web.Response:
        """``POST /channels/{channel}/events``: 201 when stored, 200 for a duplicate."""
        body = await parse_body(request, PublishBody)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _valid_id(key):
            raise AppError(ErrorCode.BAD_REQUEST, "Idempotency-Key must be 1 to 128 characters, none a control character")
        if key is not None and body.client_msg_id is not None and key != body.client_msg_id:
            raise AppError(ErrorCode.BAD_REQUEST, "Idempotency-Key and client_msg_id differ")
        client_msg_id = key if key is not None else body.client_msg_id
        appended = await self._service.publish(
            principal(request), request.match_info["channel"], body.type, body.data, client_msg_id, via="rest"
        )
        out = PublishOut(seq=appended.event.seq, id=appended.event.id, duplicate=appended.duplicate)
        return json_response(out, status=200 if appended.duplicate else 201)

    async def presence(self, request: web.Request) -> web.Response:
        """``GET /channels/{channel}/presence``: members across instances; 404 where presence is off."""
        channel = request.match_info["channel"]
        members = await self._service.presence(principal(request), channel, off=ErrorCode.NOT_FOUND)
        return json_response(PresenceOut.model_validate({"channel": channel, "members": [m.wire() for m in members]}))

    async def sync(self, request: web.Request) -> web.Response:
        """``POST /sync`` with ``{channels: {name: last_seq}, epochs?: {name: epoch}}``:
        missed events per channel."""
        body = await parse_body(request, SyncBody)
        results = await self._service.sync(principal(request), body.channels, body.epochs)
        channels = {
            name: SyncChannelOut.model_validate(
                {"events": [e.wire() for e in r.events], "head": r.head,
                 "recovered": r.recovered, "has_more": r.has_more, "epoch": r.epoch}
            )
            for name, r in results.items()
        }
        return json_response(SyncOut(channels=channels))


def health_handlers(
    store: EventStore, broker: Broker
) -> tuple[Callable[[web.Request], Awaitable[web.Response]], Callable[[web.Request], Awaitable[web.Response]]]:
    """``/healthz`` (the process answers) and ``/readyz`` (store and broker reachable)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks: dict[str, Any] = {}
        for name, ping in (("store", store.ping), ("broker", broker.ping)):
            try:
                await ping()
                checks[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                checks[name] = f"unavailable: {describe(exc)}"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                                 status=200 if ready else 503)

    return healthz, readyz
