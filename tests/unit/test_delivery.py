"""The frame-once delivery path: frames, coalescing, FIFO with queued packets, the send bound."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import orjson
from aiohttp import WSMsgType
from engineio import packet as eio_packet

from channels.models import Event
from server.delivery import Flusher, QueueDelivery, SendLimits, _event_packet, _WebSocket, send_now, ws_frame
from server.sendqueue import TrackedQueue


def decode_frames(data: bytes) -> list[tuple[WSMsgType, Any]]:
    """Parse unmasked server frames by RFC 6455 section 5.2, independently of the encoder."""
    out: list[tuple[WSMsgType, Any]] = []
    i = 0
    while i < len(data):
        first, second = data[i], data[i + 1]
        assert first & 0x80 and not first & 0x70, "FIN set, no RSV bits (no compression)"
        assert not second & 0x80, "server frames are not masked"
        size, i = second & 0x7F, i + 2
        if size == 126:
            size, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif size == 127:
            size, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        payload, i = data[i : i + size], i + size
        kind = WSMsgType(first & 0x0F)
        out.append((kind, payload.decode() if kind is WSMsgType.TEXT else payload))
    return out


def test_frames_parse_back_at_every_length_class() -> None:
    for size in (0, 1, 125, 126, 65535, 65536, 200_000):
        text = "x" * size
        assert decode_frames(ws_frame(text.encode(), opcode=0x1)) == [(WSMsgType.TEXT, text)]
    assert decode_frames(ws_frame(b"\x00\x01", opcode=0x2)) == [(WSMsgType.BINARY, b"\x00\x01")]


def test_an_event_packet_is_encoded_and_framed_once_for_all_recipients() -> None:
    event = Event("i", "chat:1", 7, "t", {"text": "héllo"}, "s", 1)
    pkt = _event_packet(event)
    first, second = pkt.encode(), pkt.encode()
    assert first is second
    assert first.startswith("42")  # Engine.IO message, Socket.IO event, namespace /
    assert json.loads(first[2:]) == ["event", event.wire()]
    assert decode_frames(first.frame) == [(WSMsgType.TEXT, str(first))]


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.buffer = 0
        self.aborted = False

    def writelines(self, chunks: list[bytes]) -> None:
        self.writes.append(list(chunks))

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class FakeServer:
    def __init__(self) -> None:
        self.flusher = Flusher()


def fake_ws(server: FakeServer) -> _WebSocket:
    ws = _WebSocket.__new__(_WebSocket)
    ws.server = server
    ws.transport = FakeTransport()
    ws._out, ws._out_size, ws._direct = [], 0, True  # noqa: SLF001
    return ws


async def test_frames_due_in_one_iteration_leave_in_one_write_in_order() -> None:
    server = FakeServer()
    a, b = fake_ws(server), fake_ws(server)
    for i in range(3):
        a.push(f"a{i}".encode())
    b.push(b"b0")
    await asyncio.sleep(0)
    assert a.transport.writes == [[b"a0", b"a1", b"a2"]]
    assert b.transport.writes == [[b"b0"]]
    a.push(b"a3")
    await asyncio.sleep(0)
    assert a.transport.writes[-1] == [b"a3"]


class FakeSocket:
    def __init__(self, ws: _WebSocket | None, sid: str = "") -> None:
        self.sid = sid
        self.ws = ws
        self.server = ws.server if ws is not None else FakeServer()
        self.queue = TrackedQueue()
        self.upgraded = True
        self.closed = self.closing = False


class FakeManager:
    def __init__(self, members: dict[str, str]) -> None:
        self.members = members

    def get_participants(self, namespace: str, room: str) -> Any:
        return iter(self.members.items())

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> str | None:
        return next((sid for sid, eio in self.members.items() if eio == eio_sid), None)


class FakeSio:
    def __init__(self, sockets: dict[str, FakeSocket]) -> None:
        self.eio = type("E", (), {"sockets": sockets})()
        for eio_sid, socket in sockets.items():
            socket.sid = eio_sid
        self.manager = FakeManager({f"s{k}": k for k in sockets})


def event(seq: int, pad: int = 0) -> Event:
    return Event(str(seq), "chat:1", seq, "t", {"pad": "x" * pad}, "s", 1)


async def test_direct_only_while_nothing_is_queued_so_order_with_acks_holds() -> None:
    server = FakeServer()
    ws = fake_ws(server)
    socket = FakeSocket(ws)
    slow: list[str] = []
    delivery = QueueDelivery(FakeSio({"e1": socket}), SendLimits(), slow.append)  # type: ignore[arg-type]
    await delivery.broadcast("chat:1", event(1))
    assert len(ws._out) == 1 and socket.queue.empty()  # noqa: SLF001  direct
    ack = eio_packet.Packet(eio_packet.MESSAGE, '431[{"ok":true}]')
    socket.queue.put_nowait(ack)  # an ack waits for the engineio writer
    await delivery.broadcast("chat:1", event(2))
    assert socket.queue.qsize() == 2  # queued behind the ack, not ahead of it
    first, _second = socket.queue.get_nowait(), socket.queue.get_nowait()
    assert first.encode() == "4" + ack.data
    assert not slow


async def test_a_connection_over_its_bound_is_reported_slow_and_gets_nothing_more() -> None:
    server = FakeServer()
    ws = fake_ws(server)
    socket = FakeSocket(ws)
    slow: list[str] = []
    delivery = QueueDelivery(FakeSio({"e1": socket}), SendLimits(max_messages=5, max_bytes=4096),  # type: ignore[arg-type]
                             slow.append)
    ws.transport.buffer = 4000  # the network is not taking what we wrote
    await delivery.broadcast("chat:1", event(1, pad=200))
    assert slow == ["se1"] and ws._out == []  # noqa: SLF001
    polling = FakeSocket(None)  # long-polling: the queue is the buffer
    delivery = QueueDelivery(FakeSio({"e2": polling}), SendLimits(max_messages=3, max_bytes=1 << 20),  # type: ignore[arg-type]
                             slow.append)
    for seq in range(1, 6):
        await delivery.broadcast("chat:1", event(seq))
    assert polling.queue.qsize() == 3 and slow[1:] == ["se2", "se2"]


async def test_the_byte_bound_holds_at_its_threshold_and_not_before() -> None:
    server = FakeServer()
    ws = fake_ws(server)
    socket = FakeSocket(ws)
    slow: list[str] = []
    frame_size = len(_event_packet(event(1)).encode().frame)
    limit = 3 * frame_size
    delivery = QueueDelivery(FakeSio({"e1": socket}), SendLimits(max_messages=1000, max_bytes=limit),  # type: ignore[arg-type]
                             slow.append)
    for seq in range(1, 4):  # exactly at the bound: accepted
        await delivery.broadcast("chat:1", event(seq))
    assert ws.buffered() == limit and slow == []
    await delivery.broadcast("chat:1", event(4))  # one byte more would not fit: cut
    assert slow == ["se1"] and ws.buffered() == limit


class FakeProtocol:
    """aiohttp's flow control as the transport drives it: paused above the high-water mark."""

    def __init__(self) -> None:
        self.writing_paused = False
        self._waiter: asyncio.Future[None] | None = None

    async def _drain_helper(self) -> None:
        if self.writing_paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class FlowTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol = FakeProtocol()
        self.high = 65536

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.high // 4, self.high

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high
        self.protocol.writing_paused = self.buffer > high

    def get_protocol(self) -> FakeProtocol:
        return self.protocol


def replay_setup(bound_frames: int) -> tuple[QueueDelivery, _WebSocket, list[str], int]:
    ws = fake_ws(FakeServer())
    ws.transport = FlowTransport()
    sio = FakeSio({"e1": FakeSocket(ws)})
    sio.manager.eio_sid_from_sid = lambda sid, ns: "e1"  # type: ignore[attr-defined]
    slow: list[str] = []
    frame_size = len(_event_packet(event(1)).encode().frame)
    limits = SendLimits(max_messages=1000, max_bytes=bound_frames * frame_size)
    return QueueDelivery(sio, limits, slow.append), ws, slow, frame_size  # type: ignore[arg-type]


async def test_a_replay_waits_for_room_until_the_transport_drains_instead_of_cutting_its_own_client() -> None:
    delivery, ws, slow, frame_size = replay_setup(bound_frames=4)
    ws.transport.buffer = 3 * frame_size  # the network is slow: over half the bound
    waiting = asyncio.create_task(delivery.writable("sid"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done() and ws.transport.high == 2 * frame_size  # paused above half the bound
    ws.transport.buffer = 0
    ws.transport.protocol.resume_writing()  # the transport drained: the wake-up, not a timer
    assert await asyncio.wait_for(waiting, 1)
    for seq in range(1, 3):
        await delivery.send("sid", event(seq))
    assert slow == [] and len(ws._out) == 2  # noqa: SLF001


async def test_a_replay_whose_client_makes_no_room_in_time_is_cut_off(monkeypatch: Any) -> None:
    import server.delivery

    monkeypatch.setattr(server.delivery, "REPLAY_WAIT", 0.05)
    delivery, ws, slow, frame_size = replay_setup(bound_frames=4)
    ws.transport.buffer = 3 * frame_size
    assert not await asyncio.wait_for(delivery.writable("sid"), 2)
    assert slow == ["sid"]


async def test_acks_count_against_the_same_bound_as_events() -> None:
    server = FakeServer()
    ws = fake_ws(server)
    socket = FakeSocket(ws)
    slow: list[str] = []
    sio = FakeSio({"e1": socket})
    QueueDelivery(sio, SendLimits(max_messages=1000, max_bytes=4096), slow.append)  # type: ignore[arg-type]
    server.send_bound = sio.eio.send_bound  # type: ignore[attr-defined]  what sockets reach as socket.server
    send_now(socket, '31[{"ok":true}]')
    assert len(ws._out) == 1 and slow == []  # noqa: SLF001
    ws.transport.buffer = 4000  # the client stopped reading
    send_now(socket, "32" + orjson.dumps([{"ok": True, "events": ["x" * 500]}]).decode())
    assert len(ws._out) == 1 and slow == ["se1"]  # noqa: SLF001  dropped, and the socket reported
