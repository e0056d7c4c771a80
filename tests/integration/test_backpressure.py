"""Promise 6 on a real server: a consumer that stops reading is cut off, memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import call, connect
from tests.support.servers import ServerFactory, ServerProcess, make_token

CHANNEL = "chat:flood"
FLOOD = 20_000
# Measured on the 2-core machine (PostgreSQL + Redis, 2 KB events): with the default
# bound (1,000 messages / 1 MiB per connection) the server grows by 3.7 MiB during
# this flood; with the bound lifted the stalled connection's queue holds every event
# and the server grows by 83 MiB. The limit sits between, with room for noise.
RSS_GROWTH_LIMIT_MIB = 16


def rss_mib(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def stalled_subscriber(server: ServerProcess, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    """A websocket client that subscribes and then stops reading from the network."""
    ws = await http.ws_connect(server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40" + json.dumps({"token": make_token("slow", channels=["chat:*"])}))
    assert (await ws.receive_str()).startswith("40")
    await ws.send_str("421" + json.dumps(["subscribe", {"channel": CHANNEL}]))
    while not (await ws.receive_str()).startswith("431"):
        pass
    assert ws._conn is not None and ws._conn.transport is not None  # noqa: SLF001
    ws._conn.transport.pause_reading()  # noqa: SLF001 - the app stops reading; TCP backs up
    return ws


async def flood(server: ServerProcess, count: int, window: int = 64) -> None:
    client, _ = await connect(server.url, make_token("pub", channels=["chat:*"]))
    slots = asyncio.Semaphore(window)
    failures: list[Any] = []

    async def one(i: int) -> None:
        try:
            ack = await client.call("publish", {"channel": CHANNEL, "type": "t", "data": {"i": i, "pad": "x" * 2000}},
                                    timeout=30)
            if not ack.get("ok"):
                failures.append(ack)
        finally:
            slots.release()

    tasks = []
    for i in range(count):
        await slots.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    assert not failures, failures[:3]
    await client.disconnect()


async def test_a_stalled_consumer_is_cut_off_and_memory_stays_bounded(cluster: ServerFactory) -> None:
    server = await cluster.start()
    reader, rec = await connect(server.url, make_token("reader", channels=["chat:*"]))
    assert (await call(reader, "subscribe", {"channel": CHANNEL}))["ok"]
    async with aiohttp.ClientSession() as http:
        stalled = await stalled_subscriber(server, http)
        before = rss_mib(server)
        peak = before
        flooding = asyncio.create_task(flood(server, FLOOD))
        while not flooding.done():
            peak = max(peak, rss_mib(server))
            await asyncio.sleep(0.05)
        await flooding
        await rec.wait_for_seq(CHANNEL, FLOOD, timeout=60)
        peak = max(peak, rss_mib(server))

        assert rec.seqs(CHANNEL) == list(range(1, FLOOD + 1))  # everyone else got everything
        growth = peak - before
        print(f"server RSS {before:.1f} MiB -> peak {peak:.1f} MiB (+{growth:.1f} MiB) during {FLOOD} events")
        assert growth < RSS_GROWTH_LIMIT_MIB
        metrics = await (await http.get(server.url + "/metrics")).text()
        assert 'switchboard_disconnects_total{reason="slow_consumer"} 1.0' in metrics
        stalled._conn.transport.resume_reading()  # type: ignore[union-attr]  # noqa: SLF001
        deadline = time.monotonic() + 10
        while not stalled.closed and time.monotonic() < deadline:
            await stalled.receive()  # drains what was in flight, then sees the abort
        assert stalled.closed
    await reader.disconnect()
