"""Redis pub/sub broker: one Redis channel per Switchboard channel.

The pub/sub side deliberately bypasses redis-py's ``PubSub`` object and drives
one dedicated ``Connection`` itself. ``PubSub`` reconnects and resubscribes
silently (inside ``get_message``, or inside a ``subscribe`` racing it), so the
listener would never learn that messages were lost in between; here every
reconnect is ours and ends with ``on_resubscribed``.

Ordering of subscription state relies on Redis answering commands of one
connection in order: a ``subscribe`` confirmation is only trusted when no
``UNSUBSCRIBE`` of that channel was sent after it (``_unsub_pending``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import BrokerUnavailable, describe
from ..ports import Broker, BrokerListener

logger = logging.getLogger(__name__)


# ARGV: channel, message, channel, message, ... (no keys: pub/sub is not keyed)
_PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
CHUNK_BYTES = 1 << 20  # one script call carries at most about this much, so none blocks Redis for long
CHUNK_MESSAGES = 1000


def _chunks(messages: Sequence[tuple[str, bytes]]) -> list[Sequence[tuple[str, bytes]]]:
    out: list[Sequence[tuple[str, bytes]]] = []
    start = size = 0
    for i, (_, payload) in enumerate(messages):
        if i > start and (size + len(payload) > CHUNK_BYTES or i - start >= CHUNK_MESSAGES):
            out.append(messages[start:i])
            start, size = i, 0
        size += len(payload)
    out.append(messages[start:])
    return out


class RedisBroker(Broker):
    """``Broker`` on Redis pub/sub (redis-py asyncio).

    ``client`` is a URL (the broker then owns and closes the client) or a
    ready ``redis.asyncio.Redis`` (left open on ``close``; its connection
    settings, including ``client_name``, also apply to the pub/sub
    connection). Redis channel names are ``prefix + "ch:" + channel``.

    A ``subscribe`` that is not confirmed within ``subscribe_timeout`` raises
    ``BrokerUnavailable`` but the channel stays wanted: it is subscribed on
    the next reconnect unless ``unsubscribe`` is called. A silent pub/sub
    connection is pinged every ``health_interval`` seconds and dropped if the
    ping is not answered within another interval.
    """

    def __init__(
        self,
        client: str | Redis,
        *,
        prefix: str = "switchboard:",
        subscribe_timeout: float = 5.0,
        command_timeout: float = 5.0,
        health_interval: float = 15.0,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        self._owns_client = isinstance(client, str)
        self._client: Redis = Redis.from_url(client) if isinstance(client, str) else client
        self._prefix = f"{prefix}ch:"
        self._prefix_bytes = self._prefix.encode()
        self._subscribe_timeout = subscribe_timeout
        self._command_timeout = command_timeout
        self._health_interval = health_interval
        self._backoff = (backoff_min, backoff_max)
        # Wanted channels -> resolved once subscribed on the current connection.
        self._subs: dict[str, asyncio.Future[None]] = {}
        self._unsub_pending: Counter[str] = Counter()
        self._resync: set[str] | None = None
        self._conn: AbstractConnection | None = None
        self._write_lock = asyncio.Lock()
        self._listener: BrokerListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # one command per batch instead of a PUBLISH each: redis-py packs and
        # parses per command, which cost more than the publishing itself
        self._publish_many = self._client.register_script(_PUBLISH_MANY)

    async def start(self, listener: BrokerListener) -> None:
        if self._listener is not None or self._closed:
            raise RuntimeError("RedisBroker.start() may be called once")
        self._listener = listener
        try:
            conn = await self._connect()
        except (RedisError, OSError, TimeoutError) as exc:
            self._listener = None
            raise BrokerUnavailable("cannot open the Redis pub/sub connection") from exc
        self._task = asyncio.create_task(self._run(conn), name="redis-broker-listener")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
        for fut in self._subs.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("broker closed"))
        self._subs.clear()
        if self._owns_client:
            await self._client.aclose()

    async def subscribe(self, channel: str) -> None:
        self._check_running()
        fut = self._subs.get(channel)
        conn = self._conn
        if fut is None:
            fut = self._subs[channel] = _new_future()
        elif fut.done():
            return
        else:
            conn = None  # a SUBSCRIBE for it is already on its way
        try:
            async with asyncio.timeout(self._subscribe_timeout):
                if conn is not None:
                    await asyncio.shield(self._send(conn, "SUBSCRIBE", self._name(channel)))
                await asyncio.shield(fut)
        except TimeoutError:
            raise BrokerUnavailable(f"subscription to {channel!r} not confirmed by Redis") from None

    async def unsubscribe(self, channel: str) -> None:
        fut = self._subs.pop(channel, None)
        if fut is None:
            return
        if not fut.done():
            fut.set_result(None)  # a concurrent subscribe was superseded
        if self._resync is not None:
            self._resync.discard(channel)
        conn = self._conn
        if conn is None:
            return  # the next connection will not subscribe it
        # Counted now, before any later SUBSCRIBE of the same channel can be
        # confirmed, so that an older confirmation is not mistaken for it.
        self._unsub_pending[channel] += 1
        await asyncio.shield(self._send(conn, "UNSUBSCRIBE", self._name(channel)))

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        if not messages:
            return
        try:
            async with asyncio.timeout(self._command_timeout):
                for chunk in _chunks(messages):
                    args: list[str | bytes] = []
                    for channel, payload in chunk:
                        args += (self._name(channel), payload)
                    # EVALSHA, loading the script first if this Redis lacks it
                    # (restarted, SCRIPT FLUSH); not in a pipeline, which would
                    # ask SCRIPT EXISTS on every execute
                    await self._publish_many(args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable("publish to Redis failed") from exc

    async def ping(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        try:
            async with asyncio.timeout(self._command_timeout):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable("Redis does not answer") from exc

    # -- connection lifecycle (listener task) ---------------------------------

    async def _run(self, conn: AbstractConnection) -> None:
        while True:
            try:
                await self._read_until_broken(conn)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("lost Redis pub/sub connection (%s); reconnecting", describe(exc))
            except Exception:
                logger.exception("Redis pub/sub listener failed; reconnecting")
            self._conn = None
            await conn.disconnect(nowait=True)
            conn = await self._reconnect()

    async def _reconnect(self) -> AbstractConnection:
        delay, cap = self._backoff
        started, attempts = time.monotonic(), 0
        while True:
            # Jitter spreads the instances out when a restarted Redis comes back.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            attempts += 1
            try:
                conn = await self._connect(resync=True)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.debug("Redis pub/sub reconnect attempt %d failed: %s", attempts, describe(exc))
            except Exception:
                logger.exception("Redis pub/sub reconnect attempt %d failed", attempts)
            else:
                logger.info(
                    "Redis pub/sub reconnected after %.2fs (%d attempts); resubscribing %d channels",
                    time.monotonic() - started, attempts, len(self._subs),
                )
                return conn
            delay = min(delay * 2, cap)

    async def _connect(self, *, resync: bool = False) -> AbstractConnection:
        conn = self._new_connection()
        try:
            async with asyncio.timeout(self._command_timeout):
                await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await self._install(conn, resync=resync)
        except BaseException:
            if self._conn is conn:
                self._conn = None
            await conn.disconnect(nowait=True)
            raise
        if resync and self._resync is not None and not self._resync:
            self._finish_resync()
        return conn

    async def _install(self, conn: AbstractConnection, *, resync: bool) -> None:
        """Subscribe the wanted set on a fresh connection and make it current."""
        async with self._write_lock:
            # Snapshot and publication of the connection happen together: a
            # (un)subscribe that found no current connection is reflected in
            # the snapshot; one that finds this connection writes its own
            # command after it (it needs the lock).
            wanted = list(self._subs)
            self._unsub_pending.clear()
            self._resync = set(wanted) if resync else None
            self._conn = conn
            if wanted:
                await conn.send_command("SUBSCRIBE", *map(self._name, wanted), check_health=False)

    def _new_connection(self) -> AbstractConnection:
        pool = self._client.connection_pool
        kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        # No retries and no redis-py health checks: both would reconnect (or
        # read) behind the listener's back; _run and _read_until_broken own that.
        kwargs.update(retry=Retry(NoBackoff(), 0), health_check_interval=0)
        return pool.connection_class(**kwargs)

    async def _send(self, conn: AbstractConnection, *args: str) -> None:
        """Write one command unless ``conn`` is no longer current.

        Failures are left to the listener, which sees the broken connection
        and resubscribes the wanted set on a new one.
        """
        async with self._write_lock:
            # Checked under the lock: redis-py would silently reconnect a
            # disconnected connection on send.
            if self._conn is not conn or not conn.is_connected:
                return
            try:
                await conn.send_command(*args, check_health=False)
            except (RedisError, OSError) as exc:
                logger.debug("Redis pub/sub write failed: %s", describe(exc))

    # -- reading --------------------------------------------------------------

    async def _read_until_broken(self, conn: AbstractConnection) -> None:
        ping_sent = False
        while True:
            frame = await conn.read_response(
                disable_decoding=True,
                timeout=self._health_interval,
                disconnect_on_error=False,
                push_request=True,
            )
            if frame is not None:
                ping_sent = False
                self._dispatch(frame)
            elif ping_sent:
                raise RedisConnectionError("no answer to PING on the pub/sub connection")
            else:
                ping_sent = True
                # A held lock means a command is being written, whose answer
                # proves liveness as well; waiting for it would stall reading.
                if not self._write_lock.locked():
                    await self._send(conn, "PING")

    def _dispatch(self, frame: object) -> None:
        # RESP2 frames are lists; RESP3 delivers the same shape as push frames.
        if not isinstance(frame, list) or len(frame) < 2:
            return  # PONG
        kind, name = frame[0], frame[1]
        channel = self._channel_of(name)
        if channel is None:
            return
        if kind == b"message" and len(frame) >= 3:
            self._deliver(channel, frame[2])
        elif kind == b"subscribe":
            self._confirmed(channel)
        elif kind == b"unsubscribe" and self._unsub_pending[channel] > 0:
            self._unsub_pending[channel] -= 1

    def _deliver(self, channel: str, payload: bytes) -> None:
        # Messages already in flight when unsubscribe() returned are dropped.
        if channel not in self._subs or self._listener is None:
            return
        try:
            self._listener.on_message(channel, payload)
        except Exception:
            logger.exception("broker listener failed on a message in %r", channel)

    def _confirmed(self, channel: str) -> None:
        if self._resync is not None:
            self._resync.discard(channel)
            if not self._resync:
                self._finish_resync()
        if self._unsub_pending[channel] > 0:
            return  # confirms a SUBSCRIBE that a later UNSUBSCRIBE undoes
        fut = self._subs.get(channel)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _finish_resync(self) -> None:
        self._resync = None
        if self._listener is None:
            return
        try:
            self._listener.on_resubscribed()
        except Exception:
            logger.exception("broker listener failed in on_resubscribed")

    # -- helpers --------------------------------------------------------------

    def _name(self, channel: str) -> str:
        return self._prefix + channel

    def _channel_of(self, name: object) -> str | None:
        if not isinstance(name, bytes) or not name.startswith(self._prefix_bytes):
            return None
        return name[len(self._prefix_bytes) :].decode("utf-8", "replace")

    def _check_running(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")
        if self._task is None:
            raise RuntimeError("RedisBroker.start() must be called first")


def _new_future() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # Retrieve the exception set by close() even if no subscribe() awaits it.
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return fut
