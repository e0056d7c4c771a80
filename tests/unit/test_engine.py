"""The Engine.IO server's per-connection machinery: one ping timer for all, one read deadline each."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from engineio import packet as eio_packet

from server.engine import PingClock
from server.sendqueue import TrackedQueue
from server.websocket import _ReadDeadline
from tests.support.waiting import LOADED, eventually


class StampedQueue(TrackedQueue):
    """A send queue that notes the loop time of each put, so timing is checked, not slept for."""

    __slots__ = ("put_at",)

    def __init__(self) -> None:
        super().__init__()
        self.put_at: list[float] = []

    def put_nowait(self, item: Any) -> None:
        self.put_at.append(asyncio.get_running_loop().time())
        super().put_nowait(item)


def fake_socket() -> Any:
    return SimpleNamespace(closing=False, closed=False, last_ping=None, queue=StampedQueue())


async def test_pings_go_out_an_interval_after_scheduling_in_order_and_skip_closed_sockets() -> None:
    interval = 0.05
    loop = asyncio.get_running_loop()
    clock = PingClock(interval)
    first, gone, second = fake_socket(), fake_socket(), fake_socket()
    first_at = loop.time()
    clock.schedule(first)
    clock.schedule(gone)
    # scheduled strictly later than the first (the loop clock has moved on), however busy the box is
    await eventually(lambda: loop.time() > first_at, what="the loop clock to advance")
    second_at = loop.time()
    clock.schedule(second)
    gone.closed = True
    await eventually(lambda: not second.queue.empty(), what="the second ping")
    # gone was due with first, so first's timer has already passed it over
    assert first.queue.qsize() == 1 and first.queue.get_nowait().packet_type == eio_packet.PING
    assert first.last_ping is not None and gone.queue.empty() and gone.last_ping is None
    assert second.queue.qsize() == 1 and second.queue.get_nowait().packet_type == eio_packet.PING
    # an interval after each was scheduled (never before: asyncio may run a timer up to
    # its clock resolution early, hence the microsecond), and first before second
    assert first.queue.put_at[0] >= first_at + interval - 1e-6
    assert second.queue.put_at[0] >= second_at + interval - 1e-6
    assert first.queue.put_at[0] <= second.queue.put_at[0]
    clock.close()


async def test_a_read_deadline_cancels_only_a_silent_reader_and_takes_its_cancel_back() -> None:
    timeout = 0.25

    async def reader(touch_every: float | None, gaps: list[float]) -> str:
        loop = asyncio.get_running_loop()
        deadline = _ReadDeadline(timeout)
        started = last = loop.time()
        try:
            # read for well past the timeout, so the deadline must have been pushed back by touches
            while loop.time() - started < 3 * timeout:
                deadline.reading = True
                await asyncio.sleep(touch_every if touch_every is not None else 10 * timeout)
                deadline.reading = False
                deadline.touch()
                gaps.append(loop.time() - last)
                last = loop.time()
            return "kept"
        except asyncio.CancelledError:
            gaps.append(loop.time() - last)
            deadline.absorb()
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0  # the session goes on to close its socket
            return "expired"
        finally:
            deadline.cancel()

    # A message every 10 ms keeps the reader. A stalled loop (a busy machine) can leave
    # a real gap longer than the timeout, and then expiring is right: such a run proves
    # nothing either way and is tried again, so only a wrong verdict fails the test.
    for _ in range(5):
        gaps: list[float] = []
        verdict = await asyncio.wait_for(reader(0.01, gaps), LOADED)
        if verdict == "kept":
            break
        assert max(gaps) >= timeout, f"expired though no gap reached {timeout}s: {gaps}"
    assert verdict == "kept", f"every attempt stalled past the timeout: {gaps}"
    silent: list[float] = []
    assert await asyncio.wait_for(reader(None, silent), LOADED) == "expired"  # silent past the timeout
    assert silent[-1] >= timeout  # and not before it


async def test_an_admitted_connect_leaves_only_the_handshake_keys_a_later_connect_reads() -> None:
    from server.socketio_server import LeanSocketIO

    sio = LeanSocketIO(async_mode="aiohttp")
    seen: list[dict[str, Any]] = []

    async def on_connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        seen.append(dict(environ))
        return auth == "ok"

    sio.on("connect", on_connect)
    headers = {"HTTP_USER_AGENT": "x" * 100, "HTTP_AUTHORIZATION": "Bearer t", "QUERY_STRING": "EIO=4",
               "HTTP_X_FORWARDED_FOR": "10.0.0.1", "aiohttp.request": object()}
    refused, admitted = dict(headers), dict(headers)
    sio.environ.update({"refused": refused, "admitted": admitted})
    await sio._handle_connect("refused", "/", "no")  # noqa: SLF001  socketio's packet entry point
    await sio._handle_connect("admitted", "/", "ok")  # noqa: SLF001
    assert seen == [headers, headers]  # the handler saw the whole environ both times
    assert sio.environ["refused"] is refused and refused == headers  # a retry reads all of it
    assert admitted == {}  # emptied in place: engineio's handshake frames hold this very dict
    assert sio.environ["admitted"] == {k: v for k, v in headers.items() if k != "HTTP_USER_AGENT"}


async def test_a_long_polling_clients_close_ends_its_pending_poll_at_once() -> None:
    # engineio closes on a client's CLOSE without sending anything, so a GET already
    # waiting in poll() was held until ping_interval + ping_timeout (30 s by default):
    # that client's disconnect hung, and a busy machine made it likely
    from engineio.async_socket import AsyncSocket

    from server.engine import LeanEngineIO

    eio = LeanEngineIO(async_mode="aiohttp", ping_interval=25, ping_timeout=5)
    socket = AsyncSocket(eio, "polling-sid")
    socket.connected = True
    eio.sockets[socket.sid] = socket
    poll = asyncio.create_task(socket.handle_get_request({}))
    await eventually(lambda: socket.queue._getters, what="the GET waiting in poll()")
    await socket.receive(eio_packet.Packet(eio_packet.CLOSE))
    assert socket.closed
    # far below the 30 s the poll waited before, far above what a loaded machine needs
    assert await asyncio.wait_for(poll, 10) == []
