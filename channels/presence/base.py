"""What every presence adapter shares: local truth, heartbeat, reaper, re-registration.

An adapter keeps its own entries in memory too (``_conns``, ``_joined``): they are
the truth the backend is repaired from. Each adapter object registers under an
*identity* (a random id, a generation of this instance) whose deadline is pushed
forward by the heartbeat and by every batch of changes. Once a deadline has
passed the identity is dead for good: the heartbeat refuses to revive it and the
backend rejects every later change under it, so the reaper (which removes a dead
identity's entries and reports the leaves, atomically per batch) never races a
late write, and nothing can be left behind under an identity nobody reaps.

Liveness never waits on work: the heartbeat has its own loop (and, on Redis, its
own connection), reaping and re-registration run in another loop, and changes go
to the backend in batches (``ops.Batcher``), each of which is a heartbeat too.

An adapter that finds its identity dead (it stalled past the deadline, or Redis
lost its data), or that failed to apply a change, takes a fresh identity, re-adds
its live entries under it and retires the old one, which is then reaped like any
dead instance. Counts are per (identity, connection), so the overlap creates no
spurious join/leave; a change rejected because its identity was dead is settled
by that: a rejected join is re-added (and its ``join`` reported then, if first),
a rejected leave is reaped (and its ``leave`` reported by the reaper).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ..errors import PresenceUnavailable, describe
from ..models import JsonObject, PresenceChange, PresenceMember, PresenceStats
from ..ports import Presence, PresenceListener
from .ops import Batcher, Op, Result

log = logging.getLogger(__name__)

T = TypeVar("T")
REAP_BATCH = 500
REAP_ROUNDS = 200  # batches per dead identity per pass: bounded work, the rest next pass


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
        self._dirty = False  # a change failed: the backend may miss some of our entries
        self._dead = False  # the backend declared ``identity`` dead
        self._batcher = Batcher(self._apply_batch, self._batch_applied)
        self._maintenance = asyncio.Lock()
        self._wake = asyncio.Event()
        self._listener: PresenceListener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self, listener: PresenceListener) -> None:
        if self._listener is not None or self._closed:
            raise RuntimeError("presence start() may be called once")
        self._listener = listener
        await self._guard(self._b_heartbeat(self.identity, register=True))
        await self._reap_dead()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._loop(self._beat, "heartbeat"), name="presence-heartbeat"),
            loop.create_task(self._loop(self._maintain, "maintenance", wake=True), name="presence-reaper"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.abandon()
        try:
            await self._batcher.drain()
            await self._b_retire(self.identity)
            await self._reap(self.identity)
        except Exception as exc:
            log.warning("could not remove this instance's presence entries (%s); "
                        "other instances reap them within %.0fs", describe(exc), self.timeout)

    async def abandon(self) -> None:
        """Stop heartbeating and reaping without removing anything, as a killed instance would."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def ping(self) -> None:
        await self._guard(self._b_ping())

    # -- the port ----------------------------------------------------------------
    # Changes are queued in call order (``_submit`` takes the place before any await),
    # so a leave or disconnect always reaches the backend after its join or connect.

    async def connect(self, conn: str, user: str, *, limit: int = 0) -> bool:
        if conn in self._conns:
            return True
        self._conns[conn] = user  # kept if the backend fails: it is counted on re-registration
        identity = self.identity
        n = await self._apply(Op("connect", conn, user, limit=limit))
        if n is None or n >= 0:  # None: declared dead; the re-registration counts it (unlimited)
            return True
        if self._conns.get(conn) == user:
            del self._conns[conn]
            if self.identity != identity:  # a re-registration queued meanwhile counted it
                await self._apply(Op("disconnect", conn, user))
        return False

    async def disconnect(self, conn: str, user: str) -> None:
        if self._conns.pop(conn, None) is not None:
            await self._apply(Op("disconnect", conn, user))

    async def join(self, channel: str, conn: str, user: str, info: JsonObject) -> bool:
        if (channel, conn) in self._joined:
            return False
        self._joined[(channel, conn)] = (user, info)
        # None (declared dead): the re-registration re-adds it and reports the join
        return await self._apply(Op("join", conn, user, channel, info)) == 1

    async def leave(self, channel: str, conn: str, user: str) -> bool:
        if self._joined.pop((channel, conn), None) is None:
            return False
        # None (declared dead): the reaper removes it and reports the leave
        return await self._apply(Op("leave", conn, user, channel)) == 0

    async def members(self, channel: str) -> list[PresenceMember]:
        return await self._guard(self._b_members(channel))

    async def stats(self, channel: str) -> PresenceStats:
        return await self._guard(self._b_stats(channel))

    def _submit(self, op: Op, identity: str | None = None) -> asyncio.Future[Result]:
        return self._batcher.submit(self.identity if identity is None else identity, op)

    async def _apply(self, op: Op) -> Result:
        """Queue a change and wait for it; on failure remember to re-register (the local
        state is already right)."""
        try:
            return await self._submit(op)
        except PresenceUnavailable:
            self._dirty = True
            raise

    async def _apply_batch(self, identity: str, ops: list[Op]) -> list[Result] | None:
        return await self._guard(self._b_apply(identity, ops))

    def _batch_applied(self, identity: str, ops: Sequence[Op], results: Sequence[Result]) -> None:
        if results and results[0] is None:
            self._found_dead(identity)
            return
        self._report([PresenceChange(op.channel, op.user, "join")
                      for op, n in zip(ops, results, strict=True) if op.restore and op.kind == "join" and n == 1])

    def _found_dead(self, identity: str) -> None:
        if identity == self.identity and not self._dead:
            self._dead = True
            self._wake.set()  # re-register now, not at the next period

    async def _guard(self, op: Awaitable[T]) -> T:
        """Await a backend call; backend failures become ``PresenceUnavailable``."""
        try:
            return await op
        except PresenceUnavailable:
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise PresenceUnavailable(f"presence backend unavailable: {describe(exc)}") from exc
        except Exception as exc:
            if self._is_backend_error(exc):
                raise PresenceUnavailable(f"presence backend failed: {describe(exc)}") from exc
            raise

    def _is_backend_error(self, exc: Exception) -> bool:
        """Adapters name their driver's error types here."""
        return False

    # -- background work ---------------------------------------------------------

    async def _loop(self, step: Callable[[], Awaitable[None]], what: str, *, wake: bool = False) -> None:
        task = asyncio.current_task()
        # redis-py may swallow a cancellation (turn it into ConnectionError, or retry
        # the command): a cancel that was asked for ends the loop all the same
        while task is None or not task.cancelling():
            delay = self.interval * random.uniform(0.9, 1.1)
            if wake:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
            else:
                await asyncio.sleep(delay)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: the next period retries
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                unexpected = not isinstance(exc, PresenceUnavailable)
                log.log(logging.ERROR if unexpected else logging.WARNING,
                        "presence %s failed: %s", what, describe(exc), exc_info=unexpected)

    async def heartbeat(self) -> None:
        """Heartbeat, re-register if declared dead, and reap once, now (the background
        tasks do this every ``timeout / 5``)."""
        await self._beat()
        await self._maintain()

    async def _beat(self) -> None:
        identity = self.identity
        if not await self._guard(self._b_heartbeat(identity, register=False)):
            self._found_dead(identity)

    async def _maintain(self) -> None:
        async with self._maintenance:
            for _ in range(2):  # the reaper may find this instance itself dead: then once more
                if self._dead or self._dirty:
                    await self._reregister("declared dead" if self._dead else "a change failed")
                await self._reap_dead()
                if not (self._dead or self._dirty):
                    return

    async def _reregister(self, why: str) -> None:
        old, new = self.identity, _new_identity()
        await self._guard(self._b_heartbeat(new, register=True))
        self.identity, self._dead, self._dirty = new, False, False
        log.warning("presence identity %s %s: re-registering %d connections and %d memberships as %s",
                    old, why, len(self._conns), len(self._joined), new)
        # queued in the same step as the switch: ahead of every later change of these
        # entries, and after every earlier one (those under ``old`` are rejected if it is dead)
        futures = [self._submit(Op("connect", conn, user, restore=True), new) for conn, user in self._conns.items()]
        futures += [self._submit(Op("join", conn, user, channel, info, restore=True), new)
                    for (channel, conn), (user, info) in self._joined.items()]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            self._dirty = True  # retried under yet another identity; ``old`` expires on its own
            raise failed
        try:
            await self._guard(self._b_retire(old))
        except PresenceUnavailable as exc:
            log.warning("presence identity %s not retired (%s); it expires within %.1fs", old, exc.message, self.ttl)

    async def _reap_dead(self) -> None:
        for identity in await self._guard(self._b_expired()):
            if identity == self.identity:  # we stalled: re-register rather than reap ourselves
                self._found_dead(identity)
            else:
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
        """Remove up to ``batch`` entries of a dead ``identity`` (nothing if it is alive),
        atomically with computing the ``leave`` changes; and whether it is gone entirely."""

    @abstractmethod
    async def _b_apply(self, identity: str, ops: list[Op]) -> list[Result] | None:
        """Apply ``ops`` in order, atomically, under a live ``identity`` and push its deadline
        to now + ttl (a batch is a heartbeat); a result per op (see ``ops.Result``).
        ``None``, changing nothing, if ``identity`` is unknown or its deadline has passed."""

    @abstractmethod
    async def _b_members(self, channel: str) -> list[PresenceMember]: ...

    @abstractmethod
    async def _b_stats(self, channel: str) -> PresenceStats: ...

    @abstractmethod
    async def _b_ping(self) -> None: ...


def _new_identity() -> str:
    return uuid.uuid4().hex[:16]
