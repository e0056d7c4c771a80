"""Request middleware: problem+json errors, bearer authentication, REST rate limit, CORS."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from channels.errors import AppError, ErrorCode
from channels.limits import KeyedBuckets, retry_after_header
from channels.models import Principal
from handlers.context import request_id
from handlers.rest import PRINCIPAL
from handlers.schemas import Problem

from .auth import TokenVerifier, bearer_token, token_key

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_CHANNEL: 400,
    ErrorCode.MISSING_TOKEN: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_SUBSCRIBED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    # socket-only: why a connection was closed; listed so that the map stays total
    ErrorCode.SLOW_CONSUMER: 503,
    ErrorCode.DISCONNECTED_BY_SERVER: 409,
    ErrorCode.SHUTDOWN: 503,
}
_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 413: ErrorCode.PAYLOAD_TOO_LARGE}
PUBLIC = frozenset({"/api/v1/openapi.json"})
TOKEN_KEY = "token_key"  # request key: ``token_key`` of the request's verified token


def problem(error: AppError) -> web.Response:
    status = STATUS[error.code]
    body = Problem(title=error.code.value.replace("_", " "), status=status, detail=error.message,
                   code=error.code.value, retry_after=error.to_dict().get("retry_after"))
    response = web.Response(body=body.model_dump_json(exclude_none=True).encode(), status=status,
                            content_type="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer error="{error.code.value}"'
    if error.retry_after is not None:
        response.headers["Retry-After"] = retry_after_header(error.retry_after)
    return response


# The middlewares below are plain functions that hand requests outside their scope
# straight on (``return handler(request)``): a coroutine middleware stays suspended
# for as long as the request runs, and a Socket.IO websocket's request runs for
# the whole connection (five such frames were ~1.5 KiB per idle connection).


@web.middleware
def problem_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every error under ``/api/`` becomes problem+json with a code; nothing leaks a traceback."""
    if not request.path.startswith("/api/"):
        return handler(request)
    return _as_problem(request, handler)


async def _as_problem(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        log.log(logging.WARNING if exc.temporary else logging.INFO,
                "%s %s -> %s (%s)", request.method, request.path, exc.code, exc.message)
        return problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.BAD_REQUEST)
        return _from_http(problem(AppError(code, exc.reason)), exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem(AppError(ErrorCode.INTERNAL, "internal error"))


def _from_http(response: web.Response, exc: web.HTTPException) -> web.Response:
    """Keep aiohttp's status and its headers (``Allow`` on 405), with our body."""
    response.set_status(exc.status)
    for name, value in exc.headers.items():
        if name.lower() not in {"content-type", "content-length"}:
            response.headers[name] = value
    return response


def auth_middleware(verifier: TokenVerifier) -> Middleware:
    """Verify ``Authorization: Bearer`` on every ``/api/v1`` route."""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.path.startswith("/api/v1/") and request.method != "OPTIONS" and request.path not in PUBLIC:
            token = bearer_token(request.headers.get("Authorization"))
            request[PRINCIPAL] = verifier.verify(token)
            request[TOKEN_KEY] = token_key(token or "")
        return handler(request)

    return middleware


def rate_limit_middleware(buckets: KeyedBuckets | None) -> Middleware:
    """REST requests per token (``rate_limited``, 429 with ``Retry-After``); server tokens are exempt.
    Keyed on the verified token (``token_key``), never on the header's text: every
    spelling of ``Authorization`` would otherwise get a bucket of its own."""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        who = request.get(PRINCIPAL)
        if buckets is not None and isinstance(who, Principal) and not who.is_server:
            retry = buckets.take(request[TOKEN_KEY], time.monotonic())
            if retry:
                raise AppError(ErrorCode.RATE_LIMITED, "too many requests with this token; retry later",
                               retry_after=retry)
        return handler(request)

    return middleware


def cors_middleware(origins: list[str]) -> Middleware:
    """CORS for browser REST clients from ``SWITCHBOARD_CORS_ORIGINS`` (``*`` for any)."""
    allow_any = origins == ["*"]

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        origin = request.headers.get("Origin")
        if origin is None or not (allow_any or origin in origins) or not request.path.startswith("/api/"):
            return handler(request)
        return allowed(request, handler, origin)

    async def allowed(request: web.Request, handler: Handler, origin: str) -> web.StreamResponse:
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Idempotency-Key"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers["Vary"] = "Origin"
        return response

    return middleware


def context_middleware(instance: str) -> Middleware:
    """Label the request's log lines with a request id (the client's ``X-Request-Id``
    when it sends a sane one) and tell the client which instance answered."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        rid = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex[:16]
        request_id.set(rid)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["X-Request-Id"] = rid
            exc.headers["X-Switchboard-Instance"] = instance
            raise
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
            response.headers["X-Switchboard-Instance"] = instance
        return response

    return middleware
