"""``Presence`` on Redis: hashes changed only by the Lua scripts in ``scripts.py``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from ..models import JsonObject, PresenceChange, PresenceMember, PresenceStats
from . import scripts
from .base import PresenceBase


class RedisPresence(PresenceBase):
    """``Presence`` on Redis (redis-py asyncio).

    ``client`` is a URL (the adapter then owns and closes the client) or a ready
    ``redis.asyncio.Redis`` (left open on ``close``). Keys start with
    ``prefix + "pr:"``; instances with the same prefix see each other.
    """

    @staticmethod
    def client_for(url: str, *, max_connections: int = 50, wait: float = 5.0) -> Redis:
        """A client whose pool makes callers wait for a free connection: redis-py's
        default pool raises once 100 commands are in flight (a reconnect storm)."""
        return Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait))

    def __init__(
        self,
        client: str | Redis,
        *,
        prefix: str = "switchboard:",
        timeout: float = 60.0,
        command_timeout: float = 5.0,
    ) -> None:
        super().__init__(timeout=timeout)
        self._owns_client = isinstance(client, str)
        self._client: Redis = self.client_for(client) if isinstance(client, str) else client
        self._p = f"{prefix}pr:"
        self._command_timeout = command_timeout
        self._ids = self._p + "ids"
        self._user_counts = self._p + "u"
        register = self._client.register_script
        self._heartbeat = register(scripts.HEARTBEAT)
        self._retire = register(scripts.RETIRE)
        self._expired = register(scripts.EXPIRED)
        self._connect = register(scripts.CONNECT)
        self._disconnect = register(scripts.DISCONNECT)
        self._join = register(scripts.JOIN)
        self._leave = register(scripts.LEAVE)
        self._reap_script = register(scripts.REAP)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._owns_client:
                await self._client.aclose()

    def _is_backend_error(self, exc: Exception) -> bool:
        return isinstance(exc, RedisError)

    async def _run_script(self, script: Any, keys: list[str], args: list[str | int]) -> Any:
        async with asyncio.timeout(self._command_timeout):
            return await script(keys=keys, args=args)

    # -- keys ---------------------------------------------------------------------

    def _identity_key(self, identity: str) -> str:
        return f"{self._p}id:{identity}"

    def _channel_keys(self, channel: str) -> tuple[str, str]:
        return f"{self._p}c:{channel}", f"{self._p}n:{channel}"

    # -- primitives ------------------------------------------------------------------

    async def _b_heartbeat(self, identity: str, *, register: bool) -> bool:
        ttl_ms = int(self.ttl * 1000)
        alive = await self._run_script(self._heartbeat, [self._ids], [identity, ttl_ms, "1" if register else "0"])
        return bool(alive)

    async def _b_retire(self, identity: str) -> None:
        await self._run_script(self._retire, [self._ids], [identity])

    async def _b_expired(self) -> list[str]:
        found = await self._run_script(self._expired, [self._ids], [])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in found]

    async def _b_reap(self, identity: str, batch: int) -> tuple[list[PresenceChange], bool]:
        out = await self._run_script(
            self._reap_script, [self._ids, self._identity_key(identity)], [identity, batch, self._p]
        )
        done, rest = bool(out[0]), [x.decode() if isinstance(x, bytes) else str(x) for x in out[1:]]
        changes = [PresenceChange(rest[i], rest[i + 1], "leave") for i in range(0, len(rest), 2)]
        return changes, done

    async def _b_connect(self, identity: str, conn: str, user: str, limit: int) -> bool:
        keys = [self._identity_key(identity), self._user_counts]
        return int(await self._run_script(self._connect, keys, [f"c\n{conn}", user, limit])) >= 0

    async def _b_disconnect(self, identity: str, conn: str, user: str) -> None:
        await self._run_script(self._disconnect, [self._identity_key(identity), self._user_counts],
                               [f"c\n{conn}", user])

    async def _b_join(self, identity: str, channel: str, conn: str, user: str, info: JsonObject) -> bool:
        entries, counts = self._channel_keys(channel)
        value = orjson.dumps({"u": user, "i": info}).decode()
        n = await self._run_script(self._join, [self._identity_key(identity), entries, counts],
                                   [f"m\n{channel}\n{conn}", user, f"{identity}/{conn}", value])
        return int(n) == 1

    async def _b_leave(self, identity: str, channel: str, conn: str, user: str) -> bool:
        entries, counts = self._channel_keys(channel)
        n = await self._run_script(self._leave, [self._identity_key(identity), entries, counts],
                                   [f"m\n{channel}\n{conn}", user, f"{identity}/{conn}"])
        return int(n) == 0

    async def _b_members(self, channel: str) -> list[PresenceMember]:
        entries, _ = self._channel_keys(channel)
        async with asyncio.timeout(self._command_timeout):
            raw = await self._client.hgetall(entries)
        counts: dict[str, int] = defaultdict(int)
        infos: dict[str, JsonObject] = {}
        for value in raw.values():
            try:
                entry = orjson.loads(value)
                user, info = str(entry["u"]), entry.get("i") or {}
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            counts[user] += 1
            infos[user] = info if isinstance(info, dict) else {}
        return [PresenceMember(user, counts[user], infos[user]) for user in sorted(counts)]

    async def _b_stats(self, channel: str) -> PresenceStats:
        entries, counts = self._channel_keys(channel)
        async with asyncio.timeout(self._command_timeout):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hlen(entries)
                pipe.hlen(counts)
                connections, users = await pipe.execute()
        return PresenceStats(int(connections), int(users))

    async def _b_ping(self) -> None:
        async with asyncio.timeout(self._command_timeout):
            await self._client.ping()
