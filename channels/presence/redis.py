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
from .ops import Op, Result


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
        # the heartbeat's own connection (taken from the pool once): it never queues
        # behind a storm of changes waiting for a pooled connection
        self._beat_client: Redis = self._client.client()
        self._p = f"{prefix}pr:"
        self._command_timeout = command_timeout
        self._ids = self._p + "ids"
        self._user_counts = self._p + "u"
        register = self._client.register_script
        self._heartbeat = register(scripts.HEARTBEAT)
        self._retire = register(scripts.RETIRE)
        self._expired = register(scripts.EXPIRED)
        self._apply_script = register(scripts.APPLY)
        self._reap_script = register(scripts.REAP)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._beat_client.aclose()
            if self._owns_client:
                await self._client.aclose()

    def _is_backend_error(self, exc: Exception) -> bool:
        return isinstance(exc, RedisError)

    async def _run_script(self, script: Any, keys: list[str], args: list[str | int],
                          client: Redis | None = None) -> Any:
        async with asyncio.timeout(self._command_timeout):
            return await script(keys=keys, args=args, client=client)

    # -- keys ---------------------------------------------------------------------

    def _identity_key(self, identity: str) -> str:
        return f"{self._p}id:{identity}"

    def _channel_keys(self, channel: str) -> tuple[str, str]:
        return f"{self._p}c:{channel}", f"{self._p}n:{channel}"

    # -- primitives ------------------------------------------------------------------

    async def _b_heartbeat(self, identity: str, *, register: bool) -> bool:
        ttl_ms = int(self.ttl * 1000)
        alive = await self._run_script(self._heartbeat, [self._ids], [identity, ttl_ms, "1" if register else "0"],
                                       self._beat_client)
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

    async def _b_apply(self, identity: str, ops: list[Op]) -> list[Result] | None:
        keys = [self._ids, self._identity_key(identity), self._user_counts]
        index: dict[str, int] = {}
        args: list[str | int] = [identity, int(self.ttl * 1000)]
        for op in ops:
            if op.kind in ("connect", "disconnect"):
                args += [op.kind[0], f"c\n{op.conn}", op.user, op.limit, "", ""]
                continue
            if op.channel not in index:
                index[op.channel] = len(keys) + 1  # Lua counts from 1
                keys.extend(self._channel_keys(op.channel))
            value = orjson.dumps({"u": op.user, "i": op.info}).decode() if op.kind == "join" else ""
            args += [op.kind[0], f"m\n{op.channel}\n{op.conn}", op.user, index[op.channel],
                     f"{identity}/{op.conn}", value]
        out = await self._run_script(self._apply_script, keys, args)
        return [int(n) for n in out[1:]] if int(out[0]) else None

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
