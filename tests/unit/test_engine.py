"""The Engine.IO server's per-connection machinery: one ping timer for all, one read deadline each."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from engineio import packet as eio_packet

from server.engine import PingClock, _ReadDeadline
from server.sendqueue import TrackedQueue


def fake_socket() -> Any:
    return SimpleNamespace(closing=False, closed=False, last_ping=None, queue=TrackedQueue())


async def test_pings_go_out_an_interval_after_scheduling_in_order_and_skip_closed_sockets() -> None:
    clock = PingClock(0.05)
    first, gone, second = fake_socket(), fake_socket(), fake_socket()
    clock.schedule(first)
    clock.schedule(gone)
    await asyncio.sleep(0.02)
    clock.schedule(second)
    gone.closed = True
    await asyncio.sleep(0.04)  # first is due, second not yet
    assert first.queue.qsize() == 1 and first.queue.get_nowait().packet_type == eio_packet.PING
    assert first.last_ping is not None
    assert second.queue.empty() and gone.queue.empty()
    await asyncio.sleep(0.04)
    assert second.queue.qsize() == 1 and gone.queue.empty()
    clock.close()


async def test_a_read_deadline_cancels_only_a_silent_reader_and_takes_its_cancel_back() -> None:
    async def reader(touch_every: float | None) -> str:
        deadline = _ReadDeadline(0.05)
        try:
            for _ in range(6):
                deadline.reading = True
                await asyncio.sleep(touch_every if touch_every is not None else 1)
                deadline.reading = False
                deadline.touch()
            return "kept"
        except asyncio.CancelledError:
            deadline.absorb()
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0  # the session goes on to close its socket
            return "expired"
        finally:
            deadline.cancel()

    assert await asyncio.wait_for(reader(0.02), 2) == "kept"  # a message every 20 ms
    assert await asyncio.wait_for(reader(None), 2) == "expired"  # silent for 50 ms


async def test_an_admitted_connect_leaves_only_the_handshake_keys_a_later_connect_reads() -> None:
    from server.engine import LeanSocketIO

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
