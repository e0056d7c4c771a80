"""What big history replies cost the server: the shape of issue 10's probe.

Starts one Switchboard process on a fresh PostgreSQL database and Redis prefix,
fills a channel with ``--events`` events of ``--size`` bytes, then:

1. a raw Engine.IO client that never reads its socket sends ``--calls``
   ``history {limit: 1000}`` calls (each asks for every event of the channel);
2. ``--pages`` concurrent ``GET /api/v1/channels/{channel}/events?after=0&limit=1000``.

For each it prints the server's RSS before, its peak during (``VmHWM``, reset
between the two through /proc/<pid>/clear_refs) and its RSS two seconds after,
and what the clients got.

    python bench/hostile_history.py

Needs the test extra (``pip install -e '.[test]'``) and the test services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.rawsocket import RawSocket, rss_kib  # noqa: E402
from tests.support.servers import ServerFactory, ServerProcess, make_token  # noqa: E402
from tests.support.services import REDIS_URL, create_postgres_database  # noqa: E402

CHANNEL = "chat:big"


async def run(args: argparse.Namespace) -> None:
    async for db in create_postgres_database():
        with tempfile.TemporaryDirectory() as logdir:
            factory = ServerFactory(Path(logdir), {
                "SWITCHBOARD_DATABASE_URL": db, "SWITCHBOARD_REDIS_URL": REDIS_URL,
                "SWITCHBOARD_REDIS_PREFIX": f"sbbench:{uuid.uuid4().hex[:8]}:"})
            try:
                server = await factory.start()
                await fill(server, args.events, "x" * args.size)
                await stalled_history(server, args.calls)
                await rest_pages(server, args.pages)
            finally:
                for started in factory.started:
                    started.terminate()


async def fill(server: ServerProcess, events: int, blob: str) -> None:
    backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
    per_batch = max(1, (3 << 20) // (len(blob) + 200))
    async with aiohttp.ClientSession(headers=backend) as http:
        for start in range(0, events, per_batch):
            batch = [{"channel": CHANNEL, "type": "t", "data": {"i": i, "b": blob}}
                     for i in range(start, min(events, start + per_batch))]
            async with http.post(server.url + "/api/v1/server/publish", json={"events": batch}) as r:
                assert r.status == 200, await r.text()


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def report(name: str, pid: int, before: int, peak: int, after: int) -> None:
    print(f"{name}: RSS before {before / 1024:.1f} MiB, peak +{(peak - before) / 1024:.1f} MiB, "
          f"after +{(after - before) / 1024:.1f} MiB")


async def stalled_history(server: ServerProcess, calls: int) -> None:
    pid = server.proc.pid
    sock = await RawSocket.connect(server.url, make_token("reader", channels=["chat:*"]))
    before = rss_kib(pid)
    reset_peak(pid)
    for ack_id in range(1, calls + 1):  # ... and it never reads again
        try:
            await sock.ws.send_str(f"42{ack_id}" + json.dumps(["history", {"channel": CHANNEL, "limit": 1000}]))
        except (ConnectionError, RuntimeError):
            print(f"  send {ack_id} failed: the server closed the connection")
            break
    await asyncio.sleep(5)
    peak = rss_kib(pid, "VmHWM")
    await sock.read_all(timeout=10)
    replies = sum(1 for e in sock.events if e and e[0] == "closing")
    print(f"  the stalled client was sent closing x{replies}, closed={sock.closed}")
    await sock.close()
    await asyncio.sleep(2)
    report(f"{calls} history calls from a client that does not read", pid, before, peak, rss_kib(pid))


async def rest_pages(server: ServerProcess, pages: int) -> None:
    pid = server.proc.pid
    auth = {"Authorization": f"Bearer {make_token('reader', channels=['chat:*'])}"}
    before = rss_kib(pid)
    reset_peak(pid)
    async with aiohttp.ClientSession(headers=auth) as http:
        async def page() -> tuple[int, int | None, int]:
            url = f"{server.url}/api/v1/channels/{CHANNEL}/events?after=0&limit=1000"
            async with http.get(url) as r:
                body = await r.read()
                out = json.loads(body)
                return len(out["events"]), out.get("next_after"), len(body)

        got = await asyncio.gather(*(page() for _ in range(pages)))
    peak = rss_kib(pid, "VmHWM")
    await asyncio.sleep(2)
    print(f"  each page: {got[0][0]} events, next_after {got[0][1]}, {got[0][2] / 1024:.0f} KiB")
    report(f"{pages} concurrent REST history pages", pid, before, peak, rss_kib(pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--pages", type=int, default=10)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
