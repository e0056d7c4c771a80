"""The OpenAPI 3.1 document, generated from the route table and the handlers' pydantic models."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from channels.names import CHANNEL_PATTERN, MAX_CHANNEL_LENGTH
from channels.service import ServiceLimits
from handlers.schemas import ClientMsgId, Problem

from .routes import Route

REF = "#/components/schemas/{model}"
OPENAPI_PATH = "/api/v1/openapi.json"
ERROR_TEXT = {
    400: "bad_request or invalid_channel",
    401: "missing_token, invalid_token or token_expired",
    403: "permission_denied",
    404: "not_found (presence routes: presence is off in the channel's namespace)",
    413: "payload_too_large",
    429: "rate_limited (Retry-After says when to retry)",
    503: "unavailable: the store or broker cannot be reached; retry",
}


CHANNEL_SCHEMA: dict[str, Any] = {"type": "string", "pattern": CHANNEL_PATTERN, "maxLength": MAX_CHANNEL_LENGTH}


# PostgreSQL keeps no NUL character in text or jsonb, so no store accepts one (the
# writer refuses it, channels/store/writer.py); JSON has no other value it refuses:
# numbers beyond 64 bits arrive as floats, lone surrogates are not valid JSON.
NO_NUL: dict[str, Any] = {"pattern": "^[^\\u0000]*$"}
STORABLE_JSON: dict[str, Any] = {
    "description": "Any JSON value whose strings and keys hold no NUL character (U+0000)",
    "anyOf": [
        {"type": "string", **NO_NUL},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": REF.format(model="StorableJson")}},
        {"type": "object", "propertyNames": NO_NUL, "additionalProperties": {"$ref": REF.format(model="StorableJson")}},
    ],
}
DATA_TEXT = ("A JSON object, at most the namespace's `max_payload_bytes` when encoded (else 413); "
             "no string or key in it may hold a NUL character.")


def build_openapi(routes: list[Route], *, version: str, limits: ServiceLimits | None = None) -> dict[str, Any]:
    """The document for ``routes``; ``limits`` are the running service's, so that the
    bounds it checks beyond the pydantic models (channels per sync, events per batch)
    are the ones it states."""
    models = _models(routes)
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    _add_service_checks(schemas.get("$defs", {}), limits or ServiceLimits())
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard",
            "version": version,
            "description": "REST API of Switchboard. Errors are application/problem+json with a `code`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _add_service_checks(schemas: dict[str, Any], limits: ServiceLimits) -> None:
    """State what ``ChannelService`` checks on fields the pydantic models leave open:
    the wire models take any string as a channel (so that a bad name gets the
    ``invalid_channel`` code from the one validator, channels/names.py), and the
    count bounds are settings. A request these schemas call valid must not be refused."""
    def prop(model: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = schemas.get(model, {}).get("properties", {}).get(name)
        return found

    schemas["StorableJson"] = STORABLE_JSON
    for model in ("PublishBody", "BatchEventIn"):
        if (data := prop(model, "data")) is not None:
            data.update(propertyNames=NO_NUL, additionalProperties={"$ref": REF.format(model="StorableJson")},
                        description=DATA_TEXT)
    if (channels := prop("SyncBody", "channels")) is not None:
        channels.update(propertyNames=CHANNEL_SCHEMA, maxProperties=limits.sync_max_channels)
    if (channel := prop("BatchEventIn", "channel")) is not None:
        channel.update(CHANNEL_SCHEMA)
    if (events := prop("BatchPublishBody", "events")) is not None:
        events.update(minItems=1, maxItems=limits.batch_max_events)


def _models(routes: list[Route]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {"Problem": Problem}
    for route in routes:
        for model in [route.body, *route.responses.values()]:
            if model is not None:
                found[model.__name__] = model
    return list(found.values())


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _path_parameters(route) + _query_parameters(route) + _header_parameters(route),
        "responses": _responses(route),
    }
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.body)}}}
    op["security"] = [{"bearer": []}] if route.auth else []
    return op


PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "channel": {"type": "string", "pattern": CHANNEL_PATTERN, "maxLength": MAX_CHANNEL_LENGTH},
    # any non-empty `sub` a token can carry: a bound here that tokens do not have would
    # leave some users impossible to disconnect (the request line bounds it, 8 KiB)
    "user": {"type": "string", "minLength": 1},
}
PATH_TEXT = {
    "channel": "`namespace:name`",
    "user": "the `sub` claim of the user's tokens",
}


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    names = re.findall(r"{(\w+)}", route.path)
    return [{"name": n, "in": "path", "required": True, "description": PATH_TEXT[n], "schema": PATH_SCHEMAS[n]}
            for n in names]


def _query_parameters(route: Route) -> list[dict[str, Any]]:
    if route.query is None:
        return []
    schema = route.query.model_json_schema()
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", []), "schema": _scalar(prop)}
        for name, prop in schema["properties"].items()
    ]


def _scalar(prop: dict[str, Any]) -> dict[str, Any]:
    """``x | None`` query fields: a query string carries the value or leaves it out, never null."""
    options = [o for o in prop.get("anyOf", []) if o.get("type") != "null"]
    if not options:
        return prop
    merged = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
    if merged.get("default") is None:
        merged.pop("default", None)
    return merged


# the one header a route takes, Idempotency-Key, is a client_msg_id: the same schema
_HEADER_SCHEMA: dict[str, Any] = TypeAdapter(ClientMsgId).json_schema()


def _header_parameters(route: Route) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "header", "required": False, "description": text, "schema": _HEADER_SCHEMA}
        for name, text in route.headers.items()
    ]


def _responses(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, model in route.responses.items():
        if model is None:
            out[str(status)] = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
        else:
            out[str(status)] = {"description": model.__doc__ or "OK", "content": {"application/json": {"schema": _ref(model)}}}
    for status in route.errors:
        out[str(status)] = {
            "description": ERROR_TEXT[status],
            "content": {"application/problem+json": {"schema": _ref(Problem)}},
        }
    return out


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def openapi_route(routes: list[Route], *, version: str, limits: ServiceLimits | None = None) -> Route:
    """``GET /api/v1/openapi.json``, public, describing every route including itself."""
    holder: dict[str, bytes] = {}

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=holder["doc"], content_type="application/json")

    route = Route("GET", OPENAPI_PATH, handler, "openapi", "This document", {200: None}, auth=False, tag="ops")
    doc = build_openapi([*routes, route], version=version, limits=limits)
    doc["paths"][OPENAPI_PATH]["get"]["responses"]["200"] = {
        "description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}
    holder["doc"] = orjson.dumps(doc)
    return route
