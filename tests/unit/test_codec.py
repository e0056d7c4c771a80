"""Broker messages: events decode exactly as before; presence changes are told apart."""

from __future__ import annotations

import orjson
import pytest

from channels import codec
from channels.models import PresenceChange
from tests.support.fakes import make_event


def test_events_decode_as_events() -> None:
    event = make_event("chat:1", 7)
    assert codec.decode_message(codec.encode_event(event)) == event


def test_an_event_whose_data_says_presence_is_still_an_event() -> None:
    event = make_event("chat:1", 3)
    tricky = orjson.dumps({**event.wire(), "presence": {"channel": "chat:1", "user": "x", "action": "join"}})
    assert codec.decode_message(tricky) == event


def test_presence_changes_round_trip() -> None:
    change = PresenceChange("chat:1", "alice", "leave")
    assert codec.decode_message(codec.encode_presence(change)) == change


@pytest.mark.parametrize("payload", [
    b"[]", b"{}", b'{"presence": 1}', b'{"presence": {"channel": "c", "user": "u", "action": "wave"}}',
    b'{"presence": {"channel": 1, "user": "u", "action": "join"}}', b"not json",
])
def test_anything_else_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        codec.decode_message(payload)
