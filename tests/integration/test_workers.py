"""``serve --workers N``: processes sharing one port, coordinating through Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.clients import call, connect
from tests.support.servers import REPO_ROOT, ServerFactory, ServerProcess, make_token
from tests.support.waiting import LOADED, eventually

CHANNEL = "chat:workers"


def token() -> str:
    return make_token("alice", channels=["chat:*"])


async def answer_from(server: ServerProcess, path: str, **kwargs: object) -> tuple[str, aiohttp.ClientResponse, bytes]:
    """One request on a fresh connection (so SO_REUSEPORT picks a worker anew)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.request(kwargs.pop("method", "GET"), server.url + path, **kwargs) as r:  # type: ignore[arg-type]
            return r.headers["X-Switchboard-Instance"], r, await r.read()


async def gauge_by_instance(server: ServerProcess, name: str) -> dict[str, float]:
    seen: dict[str, float] = {}
    for _ in range(60):
        instance, _, body = await answer_from(server, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                seen[instance] = float(line.split()[1])
        if len(seen) == 2:
            break
    return seen


async def test_two_workers_share_the_port_and_fan_out_to_each_other(cluster: ServerFactory) -> None:
    server = await cluster.start("--workers", "2")  # ready as soon as one worker answers
    instances: set[str] = set()
    deadline = time.monotonic() + LOADED  # the other may still be starting: both must serve soon
    while len(instances) < 2 and time.monotonic() < deadline:
        instances.add((await answer_from(server, "/healthz"))[0])
    assert len(instances) == 2, instances

    sub, rec = await connect(server.url, token())
    assert (await call(sub, "subscribe", {"channel": CHANNEL}))["ok"]
    connections = await gauge_by_instance(server, "switchboard_connections")
    assert sorted(connections.values()) == [0.0, 1.0], connections
    subscriber_worker = next(i for i, n in connections.items() if n == 1)

    headers = {"Authorization": f"Bearer {token()}"}
    for i in range(40):
        instance, r, body = await answer_from(server, f"/api/v1/channels/{CHANNEL}/events", method="POST",
                                              json={"type": "t", "data": {"i": i}}, headers=headers)
        assert r.status == 201, body
        if instance != subscriber_worker:
            break
    assert instance != subscriber_worker, "every publish landed on the subscriber's worker"
    await rec.wait_for_seq(CHANNEL, i + 1)
    assert rec.seqs(CHANNEL) == list(range(1, i + 2))
    await sub.disconnect()

    server.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: server.proc.poll() is not None, what="the workers to exit")
    assert server.proc.returncode == 0, server.log_tail()


def test_workers_refuse_the_memory_broker_and_say_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_JWT_SECRET="x" * 32, SWITCHBOARD_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}")
    result = subprocess.run([sys.executable, "-m", "server", "serve", "--workers", "2"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SWITCHBOARD_REDIS_URL" in result.stderr and "memory://" in result.stderr
