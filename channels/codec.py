"""The one place events become bytes and bytes become events (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from .models import Event, JsonObject, PresenceChange

# Broker messages of a channel are events (objects with a "seq") or presence
# changes, wrapped so that no event can be mistaken for one: {"presence": {...}}.
_PRESENCE_KEY = "presence"
PRESENCE_ACTIONS = frozenset({"join", "leave"})


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


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
