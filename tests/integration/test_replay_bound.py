"""Promise 6 for replays, on a real instance: a client that subscribes with ``since``
over thousands of stored events and stops reading is cut off as a slow consumer
within the send bound and a time bound (``server.delivery.REPLAY_WAIT``), and
another subscriber of the same channel keeps receiving live events meanwhile.

The stored backlog (~24 MB) is larger than what the loopback's socket buffers absorb,
so the server's own output backs up past half the send bound and the replay waits.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from server.delivery import REPLAY_WAIT
from tests.support.clients import call, connect
from tests.support.rawsocket import RawSocket
from tests.support.servers import ServerFactory, make_token

CHANNEL = "chat:replay"
STORED = 12_000
BATCH = 250
BLOB = "x" * 2000
LIVE = 40
CUT_BOUND = REPLAY_WAIT + 30  # the wait, plus filling the socket buffers on a loaded machine
ENV = {"SWITCHBOARD_RECOVERY_MAX_EVENTS": "20000", "SWITCHBOARD_SEND_QUEUE_CLOSE_GRACE": "5"}
SLOW_CUT = 'switchboard_disconnects_total{reason="slow_consumer"} 1.0'


async def test_a_client_that_stops_reading_during_its_replay_is_cut_off_and_others_keep_receiving(
    cluster: ServerFactory,
) -> None:
    server = await cluster.start(**ENV)
    reader = make_token("reader", channels=["chat:*"])
    backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
    async with aiohttp.ClientSession(headers=backend) as http:
        async def publish(events: list[dict[str, object]]) -> None:
            async with http.post(server.url + "/api/v1/server/publish", json={"events": events}) as r:
                assert r.status == 200, await r.text()

        async def slow_cuts() -> str:
            async with http.get(server.url + "/metrics") as r:
                return await r.text()

        for start in range(0, STORED, BATCH):
            await publish([{"channel": CHANNEL, "type": "t", "data": {"i": i, "b": BLOB}}
                           for i in range(start, start + BATCH)])
        healthy, seen = await connect(server.url, reader)
        assert (await call(healthy, "subscribe", {"channel": CHANNEL}))["ok"]

        stalled = await RawSocket.connect(server.url, reader)
        started = time.monotonic()
        await stalled.emit("subscribe", {"channel": CHANNEL, "since": 0})  # ...and it never reads again

        live = STORED
        while SLOW_CUT not in await slow_cuts():
            assert time.monotonic() - started < CUT_BOUND, "the stalled replay was not cut off in time"
            if live < STORED + LIVE:  # live traffic while the replay waits on its socket
                live += 1
                await publish([{"channel": CHANNEL, "type": "t", "data": {"live": live}}])
                await seen.wait_for_seq(CHANNEL, live, timeout=5)  # the other subscriber is not held up
            else:
                await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        print(f"stalled replay cut off after {elapsed:.1f}s (bound {CUT_BOUND:.0f}s)")

        live += 1  # after the cut too
        await publish([{"channel": CHANNEL, "type": "t", "data": {"live": live}}])
        await seen.wait_for_seq(CHANNEL, live, timeout=10)
        assert seen.seqs(CHANNEL) == list(range(STORED + 1, live + 1))
        assert healthy.connected and seen.closing == []

    await stalled.read_all(timeout=20)  # it wakes up: part of its replay, then why it was cut
    got = [e[1]["seq"] for e in stalled.events if e[0] == "event"]
    assert got == list(range(1, len(got) + 1)) and len(got) < STORED
    assert [e[1]["code"] for e in stalled.events if e[0] == "closing"] == ["slow_consumer"]
    await stalled.close()
    await healthy.disconnect()
