"""The one place events become bytes and bytes become events (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from .models import Event, JsonObject


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


def encode_event(event: Event) -> bytes:
    """Encode an event for the broker (and anything else that carries whole events)."""
    return orjson.dumps(event.wire())


def decode_event(data: bytes | str) -> Event:
    """Inverse of ``encode_event``; raises ``ValueError`` on anything else."""
    raw = orjson.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("event must be a JSON object")
    return event_from_wire(raw)


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


def encoded_size(data: JsonObject) -> int:
    """Size in bytes of ``data`` as JSON: what payload limits are measured against."""
    return len(orjson.dumps(data))
