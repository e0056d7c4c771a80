"""The servers under test: Switchboard (on PostgreSQL + Redis) and the two peers, 1 or 2 instances.

Each ``start`` gets a clean slate: Switchboard a fresh PostgreSQL database and
Redis prefix (dropped / left to expire afterwards), the peers a fresh Redis
prefix for their ``seq`` counters and adapter channels. ``stop`` terminates
what ``start`` spawned, and only that.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_PEER = ROOT / "bench" / "node-peer"
SECRET = "bench-secret-0123456789abcdef0123456789"
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def ensure_node_modules() -> None:
    """``npm ci`` in bench/node-peer when node_modules is missing or older than the lock file."""
    modules, lock = NODE_PEER / "node_modules", NODE_PEER / "package-lock.json"
    if modules.exists() and modules.stat().st_mtime >= lock.stat().st_mtime:
        return
    if shutil.which("npm") is None:
        raise RuntimeError("the Node peer needs Node.js 18+ and npm on PATH")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_PEER, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Target:
    """One kind of server; ``start(n)`` runs n instances and returns their URLs."""

    name: str
    label: str
    logdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        log = (self.logdir / f"{self.name}-{port}.log").open("ab")
        self.procs.append(subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=log,
                                           stderr=subprocess.STDOUT))
        self.urls.append(f"http://127.0.0.1:{port}")

    def start(self, instances: int) -> list[str]:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        self.urls.clear()


class Switchboard(Target):
    """``python -m server serve`` instances sharing a fresh database and Redis prefix."""

    database: str | None = None

    def start(self, instances: int) -> list[str]:
        self.database = f"sb_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{self.database}"'))
        env = {"SWITCHBOARD_DATABASE_URL": POSTGRES.rsplit("/", 1)[0] + f"/{self.database}",
               "SWITCHBOARD_REDIS_URL": REDIS, "SWITCHBOARD_REDIS_PREFIX": f"sbbench:{uuid.uuid4().hex[:8]}:",
               "SWITCHBOARD_JWT_SECRET": SECRET, "SWITCHBOARD_ENV": "test", "SWITCHBOARD_LOG_LEVEL": "WARNING",
               # a benchmark measures capacity: thousands of sockets from one address and
               # publishers far above a phone's rate are the point, not abuse to refuse
               "SWITCHBOARD_LIMIT_PUBLISH_RATE": "0", "SWITCHBOARD_LIMIT_CONNECT_RATE": "0",
               "SWITCHBOARD_LIMIT_CONNECTIONS_PER_USER": "0", "SWITCHBOARD_LIMIT_REST_RATE": "0",
               "SWITCHBOARD_LIMIT_CALL_RATE": "0", "SWITCHBOARD_LIMIT_PENDING_SESSIONS_PER_IP": "0"}
        for _ in range(instances):
            port = free_port()
            self._spawn([sys.executable, "-m", "server", "serve"], {**env, "SWITCHBOARD_PORT": str(port)}, ROOT, port)
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_http(url + "/readyz", proc)
        return list(self.urls)

    def stop(self) -> None:
        super().stop()
        if self.database:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            self.database = None


class SioPeer(Target):
    """The python-socketio peer (bench/peers/sio_peer.py)."""

    def start(self, instances: int) -> list[str]:
        prefix = f"siopeer:{uuid.uuid4().hex[:8]}:"
        for _ in range(instances):
            port = free_port()
            argv = [sys.executable, "-m", "bench.peers.sio_peer", "--port", str(port), "--secret", SECRET,
                    "--redis", REDIS, "--prefix", prefix]
            self._spawn(argv, {}, ROOT, port)
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_http(url + "/healthz", proc)
        return list(self.urls)


class NodePeer(Target):
    """The Node.js Socket.IO 4 peer with @socket.io/redis-adapter (bench/node-peer/server.js)."""

    def start(self, instances: int) -> list[str]:
        ensure_node_modules()
        prefix = f"nodepeer:{uuid.uuid4().hex[:8]}:"
        for _ in range(instances):
            port = free_port()
            env = {"PORT": str(port), "JWT_SECRET": SECRET, "REDIS_URL": REDIS, "PREFIX": prefix}
            self._spawn(["node", "server.js"], env, NODE_PEER, port)
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_http(url + "/healthz", proc)
        return list(self.urls)


def make_targets(logdir: Path) -> dict[str, Target]:
    return {"switchboard": Switchboard("switchboard", "Switchboard", logdir),
            "sio": SioPeer("sio", "python-socketio peer", logdir),
            "node": NodePeer("node", "Node Socket.IO peer", logdir)}
