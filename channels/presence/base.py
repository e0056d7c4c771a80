"""What every presence adapter shares: local truth, heartbeat, reaper, re-registration.

An adapter keeps its own entries in memory too (``_conns``, ``_joined``): they are
the truth the backend is repaired from. Each adapter object registers under an
*identity* (a random id) whose deadline its heartbeat pushes forward. Once a
deadline has passed the identity is dead for good: the heartbeat refuses to
revive it, so reaping can proceed in batches without racing a comeback. An
adapter that finds its identity dead (it stalled past the deadline, or Redis lost
its data), or that failed to apply a change, takes a fresh identity, re-adds its
live entries under it and retires the old one, which is then reaped like any dead
instance. Counts are per (identity, connection), so the overlap creates no
spurious join/leave.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from abc import abstractmethod
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from ..errors import PresenceUnavailable
from ..models import JsonObject, PresenceChange, PresenceMember, PresenceStats
from ..ports import Presence, PresenceListener

log = logging.getLogger(__name__)

T = TypeVar("T")
REAP_BATCH = 500
REAP_ROUNDS = 200  # batches per dead identity per tick: bounded work, the rest next tick


class PresenceBase(Presence):
    """Template for adapters: subclasses implement the backend primitives (``_b_*``)."""

    def __init__(self, *, timeout: float = 60.0) -> None:
        if timeout <= 0:
            raise ValueError("presence timeout must be positive")
        self.timeout = timeout
        self.ttl = 0.75 * timeout  # an identity not heartbeaten for this long is dead
        self.interval = 0.2 * timeout  # heartbeat and reap period (jittered by 10%)
        self.identity = _new_identity()
        self._conns: dict[str, str] = {}
        self._joined: dict[tuple[str, str], tuple[str, JsonObject]] = {}
        self._dirty = False
        self._listener: PresenceListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self, listener: PresenceListener) -> None:
        if self._listener is not None or self._closed:
            raise RuntimeError("presence start() may be called once")
        self._listener = listener
        await self._guard(self._b_heartbeat(self.identity, register=True))
        await self._reap_dead()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="presence-heartbeat")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.abandon()
        try:
            await self._b_retire(self.identity)
            await self._reap(self.identity)
        except Exception as exc:
            log.warning("could not remove this instance's presence entries (%s); "
                        "other instances reap them within %.0fs", exc, self.timeout)

    async def abandon(self) -> None:
        """Stop heartbeating and reaping without removing anything, as a killed instance would."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def ping(self) -> None:
        await self._guard(self._b_ping())

    # -- the port ----------------------------------------------------------------

    async def connect(self, conn: str, user: str, *, limit: int = 0) -> bool:
        if conn in self._conns:
            return True
        self._conns[conn] = user  # kept if the backend fails: it is counted on re-registration
        ok = await self._apply(self._b_connect(self.identity, conn, user, limit))
        if conn not in self._conns:
            # disconnected while we were counting: its uncount may have reached the
            # backend first (another pooled connection), so undo ours
            if ok:
                await self._apply(self._b_disconnect(self.identity, conn, user))
        elif not ok:
            del self._conns[conn]
        return ok

    async def disconnect(self, conn: str, user: str) -> None:
        if self._conns.pop(conn, None) is not None:
            await self._apply(self._b_disconnect(self.identity, conn, user))

    async def join(self, channel: str, conn: str, user: str, info: JsonObject) -> bool:
        if (channel, conn) in self._joined:
            return False
        self._joined[(channel, conn)] = (user, info)
        first = await self._apply(self._b_join(self.identity, channel, conn, user, info))
        if (channel, conn) in self._joined:
            return first
        # left while we were joining, and the leave may have reached the backend first:
        # undo the join; announce only what is left of the pair
        last = await self._apply(self._b_leave(self.identity, channel, conn, user))
        if last and not first:
            self._report([PresenceChange(channel, user, "leave")])
        return first and not last

    async def leave(self, channel: str, conn: str, user: str) -> bool:
        if self._joined.pop((channel, conn), None) is None:
            return False
        return await self._apply(self._b_leave(self.identity, channel, conn, user))

    async def members(self, channel: str) -> list[PresenceMember]:
        return await self._guard(self._b_members(channel))

    async def stats(self, channel: str) -> PresenceStats:
        return await self._guard(self._b_stats(channel))

    async def _apply(self, op: Awaitable[T]) -> T:
        """Run a change; on failure remember to re-register (the local state is already right)."""
        try:
            return await self._guard(op)
        except PresenceUnavailable:
            self._dirty = True
            raise

    async def _guard(self, op: Awaitable[T]) -> T:
        """Await a backend call; backend failures become ``PresenceUnavailable``."""
        try:
            return await op
        except PresenceUnavailable:
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise PresenceUnavailable(f"presence backend unavailable: {exc}") from exc
        except Exception as exc:
            if self._is_backend_error(exc):
                raise PresenceUnavailable(f"presence backend failed: {exc}") from exc
            raise

    def _is_backend_error(self, exc: Exception) -> bool:
        """Adapters name their driver's error types here."""
        return False

    # -- background work ---------------------------------------------------------

    async def _run(self) -> None:
        task = asyncio.current_task()
        # redis-py may swallow a cancellation (turn it into ConnectionError, or retry
        # the command): a cancel that was asked for ends the loop all the same
        while task is None or not task.cancelling():
            await asyncio.sleep(self.interval * random.uniform(0.9, 1.1))
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: the next tick retries
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                unexpected = not isinstance(exc, PresenceUnavailable)
                log.log(logging.ERROR if unexpected else logging.WARNING,
                        "presence heartbeat failed: %s", exc, exc_info=unexpected)

    async def heartbeat(self) -> None:
        """Heartbeat and reap once, now (the background task does this every ``timeout / 5``)."""
        await self._tick()

    async def _tick(self) -> None:
        alive = await self._guard(self._b_heartbeat(self.identity, register=False))
        if not alive or self._dirty:
            await self._reregister("declared dead" if not alive else "a change failed")
        await self._reap_dead()

    async def _reregister(self, why: str) -> None:
        old, self.identity = self.identity, _new_identity()
        self._dirty = False
        log.warning("presence identity %s %s: re-registering %d connections and %d memberships as %s",
                    old, why, len(self._conns), len(self._joined), self.identity)
        try:
            await self._guard(self._b_heartbeat(self.identity, register=True))
            changes = await self._restore()
            await self._guard(self._b_retire(old))
        except BaseException:
            self._dirty = True
            raise
        self._report(changes)

    async def _restore(self) -> list[PresenceChange]:
        joins: list[PresenceChange] = []
        identity = self.identity
        conns = list(self._conns.items())
        for conn, user in conns:
            await self._guard(self._b_connect(identity, conn, user, 0))
        joined = list(self._joined.items())
        for (channel, conn), (user, info) in joined:
            if await self._guard(self._b_join(identity, channel, conn, user, info)):
                joins.append(PresenceChange(channel, user, "join"))
        # a leave or disconnect that ran meanwhile may have reached the backend before our re-add
        for (channel, conn), (user, _) in joined:
            if (channel, conn) not in self._joined:
                await self._guard(self._b_leave(identity, channel, conn, user))
        for conn, user in conns:
            if conn not in self._conns:
                await self._guard(self._b_disconnect(identity, conn, user))
        return joins

    async def _reap_dead(self) -> None:
        for identity in await self._guard(self._b_expired()):
            await self._reap(identity)

    async def _reap(self, identity: str) -> None:
        for _ in range(REAP_ROUNDS):
            changes, done = await self._guard(self._b_reap(identity, REAP_BATCH))
            self._report(changes)
            if done:
                return

    def _report(self, changes: Sequence[PresenceChange]) -> None:
        if not changes or self._listener is None:
            return
        try:
            self._listener.on_changes(changes)
        except Exception:
            log.exception("presence listener failed")

    # -- backend primitives --------------------------------------------------------

    @abstractmethod
    async def _b_heartbeat(self, identity: str, *, register: bool) -> bool:
        """Push ``identity``'s deadline to now + ttl. ``register``: add it (new identity).
        Otherwise False, changing nothing, if it is unknown or its deadline has passed."""

    @abstractmethod
    async def _b_retire(self, identity: str) -> None:
        """Make ``identity`` dead now (reapable)."""

    @abstractmethod
    async def _b_expired(self) -> list[str]:
        """Identities whose deadline has passed."""

    @abstractmethod
    async def _b_reap(self, identity: str, batch: int) -> tuple[list[PresenceChange], bool]:
        """Remove up to ``batch`` entries of a dead ``identity`` (nothing if it is alive);
        the ``leave`` changes, and whether it is gone entirely."""

    @abstractmethod
    async def _b_connect(self, identity: str, conn: str, user: str, limit: int) -> bool: ...

    @abstractmethod
    async def _b_disconnect(self, identity: str, conn: str, user: str) -> None: ...

    @abstractmethod
    async def _b_join(self, identity: str, channel: str, conn: str, user: str, info: JsonObject) -> bool: ...

    @abstractmethod
    async def _b_leave(self, identity: str, channel: str, conn: str, user: str) -> bool: ...

    @abstractmethod
    async def _b_members(self, channel: str) -> list[PresenceMember]: ...

    @abstractmethod
    async def _b_stats(self, channel: str) -> PresenceStats: ...

    @abstractmethod
    async def _b_ping(self) -> None: ...


def _new_identity() -> str:
    return uuid.uuid4().hex[:16]
