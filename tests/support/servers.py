"""Start real ``python -m server serve`` processes for integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

TEST_SECRET = "integration-test-secret-0123456789abcdef"
# Tests of the other promises open hundreds of sockets from 127.0.0.1 and publish
# thousands of events per connection: rate limits off. Limit tests set their own.
NO_RATE_LIMITS = {
    "SWITCHBOARD_LIMIT_PUBLISH_RATE": "0",
    "SWITCHBOARD_LIMIT_CONNECT_RATE": "0",
    "SWITCHBOARD_LIMIT_CONNECTIONS_PER_USER": "0",
    "SWITCHBOARD_LIMIT_REST_RATE": "0",
    "SWITCHBOARD_LIMIT_CALL_RATE": "0",
    "SWITCHBOARD_LIMIT_PENDING_SESSIONS_PER_IP": "0",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(
    sub: str,
    *,
    channels: list[str] | None = None,
    role: str | None = None,
    ttl: int = 3600,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "channels": channels or [], **extra}
    if role:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm=algorithm)


@dataclass
class ServerProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@dataclass
class ServerFactory:
    """Starts servers sharing one configuration (store, broker, prefix); stops them all at the end."""

    workdir: Path
    env: dict[str, str]
    started: list[ServerProcess] = field(default_factory=list)

    async def start(self, *args: str, **env: str) -> ServerProcess:
        """Start ``python -m server serve [args]`` with ``env`` on top of the factory's."""
        server = self.spawn(*args, **env)
        await wait_ready(server)
        return server

    def start_sync(self, **env: str) -> ServerProcess:
        server = self.spawn(**env)
        wait_ready_sync(server)
        return server

    def spawn(self, *args: str, **env: str) -> ServerProcess:
        """Start a process without waiting for it to be ready."""
        port = free_port()
        full_env = {
            **os.environ,
            "SWITCHBOARD_HOST": "127.0.0.1",
            "SWITCHBOARD_PORT": str(port),
            "SWITCHBOARD_ENV": "test",
            "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
            "SWITCHBOARD_LOG_LEVEL": "INFO",
            **NO_RATE_LIMITS,
            **self.env,
            **env,
        }
        full_env.pop("PORT", None)
        log_path = self.workdir / f"server-{port}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", *args],
                env=full_env,
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", port, proc, log_path)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server; their log tails are printed (pytest shows them when a test fails)."""
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self.started:
            server.terminate()
            self._report(server)

    async def astop_all(self, timeout: float = 20) -> None:
        """``stop_all`` without blocking the event loop, so this process's clients can
        answer the servers' close handshakes while they drain."""
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(s.proc.poll() is None for s in self.started):
            await asyncio.sleep(0.05)
        for server in self.started:
            server.kill()
            self._report(server)

    @staticmethod
    def _report(server: ServerProcess) -> None:
        print(f"--- server {server.url} (exit {server.proc.returncode}) ---\n{server.log_tail(60)}")


# Startup imports, migrates and connects to PostgreSQL and Redis: seconds on a loaded box.
READY_TIMEOUT = 60.0


async def wait_ready(server: ServerProcess, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                async with session.get(server.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    server.kill()
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log_tail()}")


def wait_ready_sync(server: ServerProcess, timeout: float = READY_TIMEOUT) -> None:
    """Blocking ``wait_ready`` for module-scoped (synchronous) fixtures."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log_tail()}")
