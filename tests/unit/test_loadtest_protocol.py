"""The load tester's Engine.IO 4 / Socket.IO 5 codec: frames as python-socketio and Node servers send them."""

from __future__ import annotations

import pytest

from loadtest.client import _refusal, websocket_url
from loadtest.protocol import (
    EioType,
    ProtocolError,
    SioType,
    decode_message,
    decode_open,
    eio_type,
    encode_ack,
    encode_connect,
    encode_event,
)


def test_connect_frames_carry_auth_as_json() -> None:
    assert encode_connect(None) == "40"
    assert encode_connect({"token": "abc"}) == '40{"token":"abc"}'


def test_events_encode_with_and_without_ack_id() -> None:
    assert encode_event("subscribe", {"channel": "chat:1"}) == '42["subscribe",{"channel":"chat:1"}]'
    assert encode_event("publish", {"a": 1}, ack_id=12) == '4212["publish",{"a":1}]'
    assert encode_ack(7, {"ok": True}) == '437[{"ok":true}]'


def test_open_packet_gives_the_handshake() -> None:
    hs = decode_open('0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
    assert hs["sid"] == "abc" and hs["pingInterval"] == 25000
    with pytest.raises(ProtocolError):
        decode_open('40{"sid":"x"}')
    with pytest.raises(ProtocolError):
        decode_open("0{not json")


def test_engineio_types() -> None:
    assert eio_type("2") is EioType.PING
    assert eio_type("3") is EioType.PONG
    assert eio_type('42["x"]') is EioType.MESSAGE
    for bad in ("", "x", "9"):
        with pytest.raises(ProtocolError):
            eio_type(bad)


def test_decode_event_ack_connect_and_errors() -> None:
    event = decode_message('42["event",{"channel":"c","seq":3}]')
    assert event.type is SioType.EVENT and event.ack_id is None
    assert event.event == "event" and event.args == [{"channel": "c", "seq": 3}]

    wants_ack = decode_message('4215["ping",1,2]')
    assert wants_ack.ack_id == 15 and wants_ack.event == "ping" and wants_ack.args == [1, 2]

    ack = decode_message('43123[{"ok":true,"seq":9}]')
    assert ack.type is SioType.ACK and ack.ack_id == 123 and ack.args == [{"ok": True, "seq": 9}]

    connected = decode_message('40{"sid":"s1"}')
    assert connected.type is SioType.CONNECT and connected.data == {"sid": "s1"}

    refused = decode_message('44{"code":"invalid_token","message":"nope"}')
    assert refused.type is SioType.CONNECT_ERROR
    assert decode_message("41").type is SioType.DISCONNECT


def test_round_trip_of_an_ack_frame() -> None:
    packet = decode_message(encode_event("publish", {"x": [1, "two"]}, ack_id=0))
    assert packet.ack_id == 0 and packet.event == "publish" and packet.args == [{"x": [1, "two"]}]
    assert decode_message(encode_ack(0, {"ok": False})).args == [{"ok": False}]


@pytest.mark.parametrize("frame", ['451-["event",{"_placeholder":true,"num":0}]', '42/admin,["x"]',
                                   '42["event",', "4", "2", "49"])
def test_unsupported_or_broken_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode_message(frame)


def test_refusal_reasons_from_python_socketio_and_node_shapes() -> None:
    assert _refusal({"code": "token_expired", "message": "m"}).reason == "token_expired"
    assert _refusal({"message": "x", "data": {"code": "invalid_token"}}).reason == "invalid_token"
    assert _refusal({"message": "Not authorized"}).reason == "connect_refused"
    assert _refusal("plain").reason == "connect_refused"


def test_websocket_url() -> None:
    assert websocket_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket"
    assert websocket_url("https://h").startswith("wss://h/socket.io/")
