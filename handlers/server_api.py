"""``/api/v1/server/...``: calls for the application's own backend (tokens with ``role: server``).

Publish to any channel (one event or a batch, each durable and ordered like any
publish), disconnect every connection of a user on every instance, a channel's
presence, and channel stats.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from pydantic import ValidationError

from channels.control import ControlBus
from channels.errors import AppError, ErrorCode
from channels.models import Appended, Principal
from channels.service import BatchItem, ChannelService

from .acks import bad_request
from .rest import json_response, principal
from .schemas import (
    BatchPublishBody,
    BatchPublishOut,
    BatchResultOut,
    ChannelStatsOut,
    DisconnectOut,
    ErrorOut,
    PresenceOut,
)

DISCONNECT_USER = "disconnect_user"


def server_principal(request: web.Request) -> Principal:
    found = principal(request)
    if not found.is_server:
        raise AppError(ErrorCode.PERMISSION_DENIED, "this API needs a token with role 'server'")
    return found


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) beyond ``limit`` bytes; batch bodies may exceed the app-wide cap."""
    if request.content_length is not None and request.content_length > limit:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is larger than {limit} bytes")
    return bytes(body)


class ServerApi:
    def __init__(self, service: ChannelService, control: ControlBus, *, max_body_bytes: int) -> None:
        self._service = service
        self._control = control
        self._max_body = max_body_bytes

    async def publish(self, request: web.Request) -> web.Response:
        """``POST /server/publish`` ``{events: [{channel, type, data, client_msg_id?}]}``: one
        result per event, aligned, each ``{ok, channel, seq, id, duplicate}`` or ``{ok: false, error}``."""
        who = server_principal(request)
        raw = await read_limited(request, self._max_body)
        try:
            body = BatchPublishBody.model_validate(orjson.loads(raw or b"null"))
        except orjson.JSONDecodeError as exc:
            raise AppError(ErrorCode.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
        except ValidationError as exc:
            raise bad_request(exc) from None
        items = [BatchItem(e.channel, e.type, e.data, e.client_msg_id) for e in body.events]
        results = await self._service.publish_batch(who, items)
        out = [_result(item.channel, r) for item, r in zip(items, results, strict=True)]
        return json_response(BatchPublishOut(results=out))

    async def disconnect_user(self, request: web.Request) -> web.Response:
        """``POST /server/users/{user}/disconnect``: close the user's sockets on every instance."""
        server_principal(request)
        user = request.match_info["user"]
        await self._control.send(DISCONNECT_USER, user=user)
        return json_response(DisconnectOut(user=user, sent=True), status=202)

    async def presence(self, request: web.Request) -> web.Response:
        """``GET /server/channels/{channel}/presence``; 404 where presence is off."""
        who = server_principal(request)
        channel = request.match_info["channel"]
        members = await self._service.presence(who, channel, off=ErrorCode.NOT_FOUND)
        return json_response(PresenceOut.model_validate({"channel": channel, "members": [m.wire() for m in members]}))

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /server/channels/{channel}/stats``: head seq, first retained seq, subscribers."""
        stats = await self._service.stats(server_principal(request), request.match_info["channel"])
        return json_response(ChannelStatsOut(channel=stats.channel, head=stats.head, first=stats.first,
                                             subscribers=stats.subscribers, users=stats.users))


def _result(channel: str, result: Appended | AppError) -> BatchResultOut:
    if isinstance(result, AppError):
        return BatchResultOut(ok=False, channel=channel, error=ErrorOut(code=result.code.value, message=result.message))
    event = result.event
    return BatchResultOut(ok=True, channel=channel, seq=event.seq, id=event.id, duplicate=result.duplicate)
