"""What a client that stops reading costs the server: peak RSS during a flood.

Starts one Switchboard process on a fresh PostgreSQL database and Redis prefix
(the test-suite fixtures' helpers; both removed afterwards), subscribes a healthy
python-socketio client and a raw Engine.IO client that never reads again, floods the
channel through the server-to-server batch API (paced so that the healthy client
keeps up), and prints the server's RSS before the flood and its peak (``VmHWM``
from /proc) after, and what each client got.

    python bench/slow_consumer.py                                  # default send queue
    python bench/slow_consumer.py --queue-messages 10000000 --queue-bytes 1000000000  # no bound

Needs the test extra (``pip install -e '.[test]'``) and the test services.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.clients import call, connect  # noqa: E402
from tests.support.rawsocket import RawSocket, rss_kib  # noqa: E402
from tests.support.servers import ServerFactory, make_token  # noqa: E402
from tests.support.services import REDIS_URL, create_postgres_database  # noqa: E402

CHANNEL = "chat:flood"
BATCH = 250


async def run(args: argparse.Namespace) -> None:
    blob = "x" * args.size
    async for db in create_postgres_database():
        with tempfile.TemporaryDirectory() as logdir:
            factory = ServerFactory(Path(logdir), {
                "SWITCHBOARD_DATABASE_URL": db, "SWITCHBOARD_REDIS_URL": REDIS_URL,
                "SWITCHBOARD_REDIS_PREFIX": f"sbbench:{uuid.uuid4().hex[:8]}:",
                "SWITCHBOARD_SEND_QUEUE_MAX_MESSAGES": str(args.queue_messages),
                "SWITCHBOARD_SEND_QUEUE_MAX_BYTES": str(args.queue_bytes),
                "SWITCHBOARD_SEND_QUEUE_CLOSE_GRACE": "60"})
            try:
                await flood(factory, args.events, blob)
            finally:
                for server in factory.started:
                    server.terminate()


async def flood(factory: ServerFactory, events: int, blob: str) -> None:
    server = await factory.start()
    reader = make_token("reader", channels=["chat:*"])
    healthy, seen = await connect(server.url, reader)
    await call(healthy, "subscribe", {"channel": CHANNEL})
    stalled = await RawSocket.connect(server.url, reader)
    await stalled.call("subscribe", {"channel": CHANNEL})
    backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
    async with aiohttp.ClientSession(headers=backend) as http:
        async def publish(batch: list[dict[str, object]]) -> None:
            async with http.post(server.url + "/api/v1/server/publish", json={"events": batch}) as r:
                assert r.status == 200, await r.text()

        await publish([{"channel": "chat:warmup", "type": "t", "data": {"b": blob}}] * BATCH)
        await asyncio.sleep(0.3)
        before = rss_kib(server.proc.pid)
        started = time.monotonic()
        for start in range(0, events, BATCH):
            await publish([{"channel": CHANNEL, "type": "t", "data": {"i": i, "b": blob}}
                           for i in range(start, min(events, start + BATCH))])
            while min(events, start + BATCH) - (seen.events[CHANNEL][-1]["seq"] if seen.events[CHANNEL] else 0) > 600:
                await asyncio.sleep(0.002)
        await seen.wait_for_seq(CHANNEL, events, timeout=60)
        took = time.monotonic() - started
        after, peak = rss_kib(server.proc.pid), rss_kib(server.proc.pid, "VmHWM")
    await stalled.read_all(timeout=10)
    got = [e[1]["seq"] for e in stalled.events if e[0] == "event"]
    closing = [e[1]["code"] for e in stalled.events if e[0] == "closing"]
    print(f"{events} events of ~{len(blob)} B in {took:.1f}s; server RSS before {before / 1024:.1f} MiB, "
          f"after {after / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f} MiB)")
    print(f"healthy subscriber: {len(seen.events[CHANNEL])} events, in order: "
          f"{seen.seqs(CHANNEL) == list(range(1, events + 1))}")
    print(f"stalled client: {len(got)} events, closing {closing or 'none'}, disconnected: {stalled.disconnected}")
    await stalled.close()
    await healthy.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000, help="bytes of filler per event")
    parser.add_argument("--queue-messages", type=int, default=1000)
    parser.add_argument("--queue-bytes", type=int, default=1024 * 1024)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
