"""``InlineCalls``: which Engine.IO messages it takes, and how it answers them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from server.inline import InlineCalls
from tests.unit.test_delivery import FakeServer, FakeSocket, decode_frames, fake_ws


class Manager:
    def __init__(self) -> None:
        self.connected = {"e1": "s1"}

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> str | None:
        return self.connected.get(eio_sid) if namespace == "/" else None

    def is_connected(self, sid: str, namespace: str) -> bool:
        return sid in self.connected.values()


class Sio:
    def __init__(self, socket: FakeSocket) -> None:
        self.manager = Manager()
        self.eio = type("E", (), {"sockets": {"e1": socket}})()


Call = tuple[str, tuple[object, ...], Any]


def inline_calls(socket: FakeSocket) -> tuple[InlineCalls, list[Call]]:
    calls: list[Call] = []
    inline = InlineCalls(Sio(socket))  # type: ignore[arg-type]
    inline.on("publish", lambda sid, args, reply: calls.append((sid, args, reply)))
    return inline, calls


async def test_a_registered_call_runs_at_once_and_its_ack_goes_out_with_its_id() -> None:
    ws = fake_ws(FakeServer())
    inline, calls = inline_calls(FakeSocket(ws))
    assert inline("e1", '4217["publish",{"channel":"c:1"},2]') is True
    [(sid, args, reply)] = calls
    assert sid == "s1" and args == ({"channel": "c:1"}, 2)
    reply({"ok": True, "seq": 5})
    await asyncio.sleep(0)  # the flusher writes once per loop iteration
    [[frame]] = ws.transport.writes  # type: ignore[attr-defined]
    [(_, text)] = decode_frames(frame)
    assert text[:4] == "4317" and orjson.loads(text[4:]) == [{"ok": True, "seq": 5}]


async def test_without_an_ack_id_the_handler_gets_no_reply() -> None:
    inline, calls = inline_calls(FakeSocket(fake_ws(FakeServer())))
    assert inline("e1", '42["publish",{}]') is True
    assert calls[0][2] is None


async def test_an_ack_waits_behind_what_engineio_has_queued() -> None:
    socket = FakeSocket(fake_ws(FakeServer()))
    socket.queue.put_nowait("earlier")  # engineio's writer has not sent this yet
    inline, calls = inline_calls(socket)
    inline("e1", '423["publish",{}]')
    calls[0][2]({"ok": True})
    assert socket.queue.qsize() == 2 and socket.queue.get_nowait() == "earlier"
    assert socket.queue.get_nowait().encode() == '433[{"ok":true}]'


async def test_an_ack_for_a_socket_that_closed_meanwhile_is_dropped() -> None:
    socket = FakeSocket(fake_ws(FakeServer()))
    inline, calls = inline_calls(socket)
    inline("e1", '423["publish",{}]')
    socket.closed = True
    calls[0][2]({"ok": True})
    assert socket.queue.empty() and socket.ws._out == []  # type: ignore[union-attr]  # noqa: SLF001


@pytest.mark.parametrize("message", [
    '42/admin,1["publish",{}]',  # another namespace
    '451-["publish",{"_placeholder":true,"num":0}]',  # binary event
    '421["history",{}]',  # not registered inline
    '421["publish", {broken',  # malformed: python-socketio reports it
    '421{"not":"a list"}',
    "421[]",
    "421[7]",
    '4312[{"ok":true}]',  # an ack from the client
    "2",  # an Engine.IO ping
])
def test_anything_else_is_left_to_python_socketio(message: str) -> None:
    inline, calls = inline_calls(FakeSocket(fake_ws(FakeServer())))
    assert inline("e1", message) is False and calls == []


def test_a_socket_not_connected_to_the_namespace_is_left_to_python_socketio() -> None:
    inline, calls = inline_calls(FakeSocket(fake_ws(FakeServer())))
    assert inline("e2", '421["publish",{}]') is False and calls == []


def test_a_failing_handler_is_logged_and_its_message_not_handled_twice(caplog: pytest.LogCaptureFixture) -> None:
    inline = InlineCalls(Sio(FakeSocket(fake_ws(FakeServer()))))  # type: ignore[arg-type]

    def broken(sid: str, args: tuple[object, ...], reply: Any) -> None:
        raise RuntimeError("bug")

    inline.on("publish", broken)
    with caplog.at_level(logging.ERROR, logger="server.inline"):
        assert inline("e1", '421["publish",{}]') is True
    assert "inline publish from s1 failed" in caplog.text
