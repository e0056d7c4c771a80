"""Engine.IO 4 / Socket.IO 5 packet codec for the websocket transport (text only).

Over a websocket every Engine.IO packet is one frame: a type digit followed by
its data. Socket.IO packets ride inside Engine.IO ``message`` packets (``4``):

    0{"sid":..,"pingInterval":..}   Engine.IO open (server -> client)
    2 / 3                           Engine.IO ping (server) / pong (client)
    40{"token":".."}                Socket.IO CONNECT with auth (client)
    40{"sid":".."}                  CONNECT accepted (server)
    44{"message":..,"data":{..}}    CONNECT_ERROR (server)
    42["event",{..}]                EVENT
    4212["publish",{..}]            EVENT that wants ack 12
    4312[{..}]                      ACK 12
    41                              DISCONNECT

Only the default namespace ``/`` and JSON (binary-free) payloads are spoken:
that is all Switchboard's API uses, and it keeps the hot path to one slice and
one ``orjson.loads`` per received event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson


class ProtocolError(ValueError):
    """A frame that is not a packet this codec understands."""


class EioType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SioType(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


PONG_FRAME = "3"
DISCONNECT_FRAME = "41"


@dataclass(frozen=True, slots=True)
class SioPacket:
    """A decoded Socket.IO packet of namespace ``/``.

    ``data`` is the decoded JSON: the args list for EVENT and ACK (for EVENT the
    first item is the event name), an object or ``None`` for the others.
    """

    type: SioType
    data: Any = None
    ack_id: int | None = None

    @property
    def event(self) -> str | None:
        if self.type is SioType.EVENT and isinstance(self.data, list) and self.data:
            name = self.data[0]
            return name if isinstance(name, str) else None
        return None

    @property
    def args(self) -> list[Any]:
        if isinstance(self.data, list):
            return self.data[1:] if self.type is SioType.EVENT else self.data
        return []


def encode_connect(auth: dict[str, Any] | None) -> str:
    """The CONNECT frame for namespace ``/``, carrying ``auth`` when given."""
    return "40" if auth is None else "40" + orjson.dumps(auth).decode()


def encode_event(name: str, *args: Any, ack_id: int | None = None) -> str:
    """An EVENT frame; with ``ack_id`` the server answers with an ACK of that id."""
    body = orjson.dumps([name, *args]).decode()
    return f"42{body}" if ack_id is None else f"42{ack_id}{body}"


def encode_ack(ack_id: int, *args: Any) -> str:
    """An ACK frame answering the server's EVENT ``ack_id``."""
    return f"43{ack_id}{orjson.dumps(list(args)).decode()}"


def decode_open(frame: str) -> dict[str, Any]:
    """The handshake object of an Engine.IO OPEN frame (``sid``, ``pingInterval``, ...)."""
    if not frame.startswith("0"):
        raise ProtocolError(f"expected an Engine.IO open packet, got {frame[:40]!r}")
    try:
        data = orjson.loads(frame[1:])
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"bad open packet: {exc}") from None
    if not isinstance(data, dict) or "sid" not in data:
        raise ProtocolError("open packet without sid")
    return data


def eio_type(frame: str) -> EioType:
    """The Engine.IO type of a text frame."""
    if not frame or not frame[0].isdigit() or int(frame[0]) > EioType.NOOP:
        raise ProtocolError(f"not an Engine.IO packet: {frame[:40]!r}")
    return EioType(int(frame[0]))


def decode_message(frame: str) -> SioPacket:
    """Decode an Engine.IO MESSAGE frame (``4...``) into its Socket.IO packet.

    Raises ``ProtocolError`` for binary packets, other namespaces and bad JSON.
    """
    if len(frame) < 2 or frame[0] != "4" or not frame[1].isdigit():
        raise ProtocolError(f"not a Socket.IO message: {frame[:40]!r}")
    kind = int(frame[1])
    if kind > SioType.BINARY_ACK:
        raise ProtocolError(f"unknown Socket.IO packet type {kind}")
    sio_type = SioType(kind)
    if sio_type in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        raise ProtocolError("binary packets are not supported")
    pos = 2
    if pos < len(frame) and frame[pos] == "/":
        raise ProtocolError("only the default namespace is supported")
    start = pos
    while pos < len(frame) and frame[pos].isdigit():
        pos += 1
    ack_id = int(frame[start:pos]) if pos > start else None
    body = frame[pos:]
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"bad JSON in Socket.IO packet: {exc}") from None
    return SioPacket(sio_type, data, ack_id)
