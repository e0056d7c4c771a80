"""The one place events become bytes and bytes become events (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import AppError, ErrorCode
from .models import Event, JsonObject, PresenceChange

# Broker messages of a channel are events (objects with a "seq") or presence
# changes, wrapped so that no event can be mistaken for one: {"presence": {...}}.
_PRESENCE_KEY = "presence"
PRESENCE_ACTIONS = frozenset({"join", "leave"})


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


# How deep an event's ``data`` may nest (objects and arrays). orjson encodes at most
# 254 levels, and an event travels wrapped a few levels deeper (event object, the
# Socket.IO frame, a history page): data as deep as allowed must encode in all of them.
MAX_DATA_DEPTH = 100


def encode_data(data: JsonObject) -> bytes:
    """An event's ``data`` as JSON, or ``AppError(bad_request)`` saying why it cannot
    be: nested deeper than ``MAX_DATA_DEPTH``, or not encodable (a lone surrogate,
    an integer beyond 64 bits)."""
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:  # orjson.JSONEncodeError, which its recursion limit raises too
        if _deeper_than(data, MAX_DATA_DEPTH):
            raise _too_deep() from None
        raise AppError(ErrorCode.BAD_REQUEST, f"data is not storable JSON: {exc}") from None
    # every level opens a bracket: with no more brackets than the limit (the usual
    # case, counted in C) the walk is not needed
    if encoded.count(b"{") + encoded.count(b"[") > MAX_DATA_DEPTH and _deeper_than(data, MAX_DATA_DEPTH):
        raise _too_deep()
    return encoded


def _too_deep() -> AppError:
    return AppError(ErrorCode.BAD_REQUEST, f"data nests deeper than {MAX_DATA_DEPTH} levels of objects and arrays")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def encode_event(event: Event) -> bytes:
    """Encode an event for the broker (and anything else that carries whole events)."""
    return orjson.dumps(event.wire())


def encode_presence(change: PresenceChange) -> bytes:
    """Encode a presence change for the channel's broker channel."""
    return orjson.dumps({_PRESENCE_KEY: change.wire()})


def decode_message(data: bytes | str) -> Event | PresenceChange:
    """A broker message of a channel: an event (as ``encode_event`` wrote it) or a
    presence change. Raises ``ValueError`` on anything else."""
    raw = orjson.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("broker message must be a JSON object")
    inner = raw.get(_PRESENCE_KEY)
    if inner is None or "seq" in raw:
        return event_from_wire(raw)
    if not isinstance(inner, dict) or inner.get("action") not in PRESENCE_ACTIONS:
        raise ValueError("malformed presence message")
    channel, user = inner.get("channel"), inner.get("user")
    if not isinstance(channel, str) or not isinstance(user, str):
        raise ValueError("malformed presence message")
    return PresenceChange(channel, user, str(inner["action"]))


def encode_command(command: JsonObject) -> bytes:
    """Encode an instance-wide command (control channel)."""
    return orjson.dumps(command)


def event_from_wire(raw: JsonObject) -> Event:
    try:
        return Event(
            id=str(raw["id"]),
            channel=str(raw["channel"]),
            seq=int(raw["seq"]),
            type=str(raw["type"]),
            data=dict(raw["data"]),
            sender=str(raw["sender"]),
            ts=int(raw["ts"]),
            client_msg_id=raw.get("client_msg_id"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed event: {exc}") from exc
