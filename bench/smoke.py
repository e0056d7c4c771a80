"""A quick end-to-end baseline: durable publish throughput and fan-out, 1 or 2 instances.

Starts its own Switchboard processes on a fresh PostgreSQL database and a fresh Redis
prefix (both removed afterwards), connects subscribers and publishers with
python-socketio's AsyncClient, and prints acknowledged publishes/s, deliveries/s,
publish->ack and publish->receive latency, and loss / duplicates / order violations.

    python bench/smoke.py --instances 2 --subscribers 200 --publishers 8 --events 4000

This is a smoke benchmark, not the load tester (``loadtest/``, issue 4): the client
library shares this machine's two cores with the servers and the databases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import socketio

SECRET = "bench-secret-bench-secret-bench-secret"
CHANNEL = "bench:smoke"
ROOT = Path(__file__).resolve().parents[1]


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600, "channels": ["bench:*"]}, SECRET, algorithm="HS256")


# This measures throughput, not limits: the publishers are unthrottled, and the in-process
# clients (the bottleneck here) are allowed a deep send queue instead of being cut off.
THROUGHPUT_SETTINGS = {
    "SWITCHBOARD_LIMIT_PUBLISH_RATE": "0",
    "SWITCHBOARD_LIMIT_CONNECT_RATE": "0",
    "SWITCHBOARD_LIMIT_CONNECTIONS_PER_USER": "0",
    "SWITCHBOARD_SEND_QUEUE_MAX_MESSAGES": "1000000",
    "SWITCHBOARD_SEND_QUEUE_MAX_BYTES": str(1 << 30),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_servers(n: int, env: dict[str, str], logdir: Path) -> list[tuple[str, subprocess.Popen[bytes]]]:
    servers = []
    for _ in range(n):
        port = free_port()
        log = (logdir / f"server-{port}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "server", "serve"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, "SWITCHBOARD_PORT": str(port), "SWITCHBOARD_LOG_LEVEL": "WARNING"})
        servers.append((f"http://127.0.0.1:{port}", proc))
    async with aiohttp.ClientSession() as http:
        for url, proc in servers:
            for _ in range(200):
                try:
                    async with http.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{url} did not start")
    return servers


class Subscriber:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.client = socketio.AsyncClient(reconnection=False)
        self.client.on("event", self.on_event)

    async def on_event(self, event: dict[str, Any]) -> None:
        self.seqs.append(event["seq"])
        self.latencies.append(time.time() - event["data"]["t"])


async def publisher(client: socketio.AsyncClient, count: int, window: int, acks: list[float]) -> None:
    slots = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        try:
            start = time.perf_counter()
            ack = await client.call("publish", {"channel": CHANNEL, "type": "b", "data": {"t": time.time(), "i": i}},
                                    timeout=30)
            if ack.get("ok"):
                acks.append(time.perf_counter() - start)
        finally:
            slots.release()

    tasks = []
    for i in range(count):
        await slots.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


async def run(args: argparse.Namespace) -> None:
    db = f"sb_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres)
    await admin.execute(f'CREATE DATABASE "{db}"')
    base = args.postgres.rsplit("/", 1)[0]
    env = {"SWITCHBOARD_DATABASE_URL": f"{base}/{db}", "SWITCHBOARD_REDIS_URL": args.redis,
           "SWITCHBOARD_REDIS_PREFIX": f"sbbench:{uuid.uuid4().hex[:8]}:", "SWITCHBOARD_JWT_SECRET": SECRET,
           "SWITCHBOARD_ENV": "test", **THROUGHPUT_SETTINGS}
    servers: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        with tempfile.TemporaryDirectory() as logdir:
            servers = await start_servers(args.instances, env, Path(logdir))
            urls = [u for u, _ in servers]
            await measure(args, urls)
    finally:
        for _, proc in servers:
            proc.terminate()
            proc.wait(timeout=15)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


async def measure(args: argparse.Namespace, urls: list[str]) -> None:
    subs = [Subscriber() for _ in range(args.subscribers)]
    for i, sub in enumerate(subs):
        await sub.client.connect(urls[i % len(urls)], auth={"token": token(f"s{i}")}, transports=["websocket"])
        await sub.client.call("subscribe", {"channel": CHANNEL})
    pubs = [socketio.AsyncClient(reconnection=False) for _ in range(args.publishers)]
    for i, pub in enumerate(pubs):
        await pub.connect(urls[i % len(urls)], auth={"token": token(f"p{i}")}, transports=["websocket"])
    acks: list[float] = []
    per = args.events // args.publishers
    total = per * args.publishers
    start = time.perf_counter()
    await asyncio.gather(*(publisher(p, per, args.window, acks) for p in pubs))
    publish_time = time.perf_counter() - start
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(len(s.seqs) < total for s in subs):
        await asyncio.sleep(0.05)
    deliver_time = time.perf_counter() - start
    report(args, subs, acks, total, publish_time, deliver_time)
    for client in [s.client for s in subs] + pubs:
        await client.disconnect()


def report(args: argparse.Namespace, subs: list[Subscriber], acks: list[float], total: int,
           publish_time: float, deliver_time: float) -> None:
    lost = dup = disorder = 0
    for s in subs:
        seen = set(s.seqs)
        lost += total - len(seen & set(range(1, total + 1)))
        dup += len(s.seqs) - len(seen)
        disorder += sum(1 for a, b in zip(s.seqs, s.seqs[1:]) if b <= a)
    lat = [x for s in subs for x in s.latencies]
    deliveries = sum(len(s.seqs) for s in subs)
    print(f"instances={args.instances} subscribers={args.subscribers} publishers={args.publishers} "
          f"window={args.window} events={total}")
    print(f"acked publishes/s   {len(acks) / publish_time:10.0f}   (acked {len(acks)}/{total})")
    print(f"publish->ack ms     p50 {pct(acks, 50):7.2f}  p99 {pct(acks, 99):7.2f}")
    print(f"deliveries/s        {deliveries / deliver_time:10.0f}   ({deliveries} in {deliver_time:.2f}s)")
    print(f"publish->receive ms p50 {pct(lat, 50):7.2f}  p99 {pct(lat, 99):7.2f}")
    print(f"lost {lost}  duplicates {dup}  order violations {disorder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1, choices=[1, 2])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16, help="unacknowledged publishes per publisher")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
