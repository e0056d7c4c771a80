"""Promise 6 on a real instance (PostgreSQL + Redis): a client that stops reading while
20,000 events flood its channel is cut off as a slow consumer; server memory stays
bounded; the other subscriber receives everything; the cut client recovers with ``since``.

Memory bound: the instance's peak RSS (``VmHWM``) may grow at most ``RSS_BOUND_MIB``
over its RSS before the flood. Measured on the 2-core CI machine (2026-11-21) with
the default send queue (1000 messages / 1 MiB): +4.9 to +5.6 MiB; the same flood with
the bound lifted (10^7 messages / 1 GB) grew +41.8 MiB and kept growing with the flood.
Reproduce both with ``python bench/slow_consumer.py [--queue-messages N --queue-bytes N]``.
"""

from __future__ import annotations

import aiohttp

from tests.support.clients import call, connect
from tests.support.rawsocket import RawSocket, rss_kib
from tests.support.servers import ServerFactory, make_token
from tests.support.waiting import LOADED, eventually

CHANNEL = "chat:flood"
WARMUP = "chat:warmup"
EVENTS = 20_000
BATCH = 250
BLOB = "x" * 1000  # ~1 KB per event: 20 MB of flood
LAG = 600  # the healthy subscriber may trail by this much (the send queue holds 1000)
RSS_BOUND_MIB = 16
ENV = {"SWITCHBOARD_SEND_QUEUE_CLOSE_GRACE": "60", "SWITCHBOARD_RECOVERY_MAX_EVENTS": "25000"}


async def test_a_stalled_client_is_cut_off_memory_stays_bounded_and_others_get_everything(
    cluster: ServerFactory,
) -> None:
    server = await cluster.start(**ENV)
    reader = make_token("reader", channels=["chat:*"])
    healthy, seen = await connect(server.url, reader)
    for channel in (CHANNEL, WARMUP):
        assert (await call(healthy, "subscribe", {"channel": channel}))["ok"]
    stalled = await RawSocket.connect(server.url, reader)
    assert (await stalled.call("subscribe", {"channel": CHANNEL}))["ok"]  # ...and it never reads again
    backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}

    async with aiohttp.ClientSession(headers=backend) as http:
        async def publish(events: list[dict[str, object]]) -> None:
            async with http.post(server.url + "/api/v1/server/publish", json={"events": events}) as r:
                assert r.status == 200, await r.text()

        # The warm-up goes the whole delivery path once; the baseline is taken when it has
        # arrived, i.e. when the instance has finished with it, not after a guessed pause.
        await publish([{"channel": WARMUP, "type": "t", "data": {"b": BLOB}}] * BATCH)
        await seen.wait_for_seq(WARMUP, BATCH)
        before = rss_kib(server.proc.pid)

        def caught_up(published: int) -> bool:  # the healthy subscriber keeps up; the stalled one does not
            return published - (seen.events[CHANNEL][-1]["seq"] if seen.events[CHANNEL] else 0) <= LAG

        for start in range(0, EVENTS, BATCH):
            await publish([{"channel": CHANNEL, "type": "t", "data": {"i": i, "b": BLOB}}
                           for i in range(start, start + BATCH)])
            published = start + BATCH
            await eventually(lambda n=published: caught_up(n), what=f"the healthy subscriber near {published}",
                             interval=0.002)
        await seen.wait_for_seq(CHANNEL, EVENTS, timeout=2 * LOADED)
        peak = rss_kib(server.proc.pid, "VmHWM")

    assert seen.seqs(CHANNEL) == list(range(1, EVENTS + 1))
    grew_mib = (peak - before) / 1024
    print(f"peak RSS {peak / 1024:.1f} MiB, +{grew_mib:.1f} MiB over {before / 1024:.1f} MiB before the flood")
    assert grew_mib < RSS_BOUND_MIB, f"peak RSS grew {grew_mib:.1f} MiB during the flood (bound {RSS_BOUND_MIB})"
    assert healthy.connected and seen.closing == []

    await stalled.read_all(timeout=LOADED)  # the phone wakes up: what was in flight, then the farewell
    got = [e[1]["seq"] for e in stalled.events if e[0] == "event"]
    assert got == list(range(1, len(got) + 1)) and len(got) < EVENTS
    closing = [e[1] for e in stalled.events if e[0] == "closing"]
    assert [c["code"] for c in closing] == ["slow_consumer"]
    assert stalled.disconnected and stalled.closed
    await stalled.close()
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        assert 'switchboard_disconnects_total{reason="slow_consumer"} 1.0' in await r.text()

    back, again = await connect(server.url, reader)  # it comes back and recovers what it missed
    ack = await call(back, "subscribe", {"channel": CHANNEL, "since": got[-1]}, timeout=2 * LOADED)
    assert ack["ok"] and ack["recovered"] is True and ack["head"] == EVENTS
    await again.wait_for_seq(CHANNEL, EVENTS, timeout=2 * LOADED)
    assert again.seqs(CHANNEL) == list(range(got[-1] + 1, EVENTS + 1))
    assert again.closing == []  # the replay is paced by the socket: no slow_consumer cut of its own
    for client in (healthy, back):
        await client.disconnect()
