"""Presence changes queued in order and applied to the backend in batches.

Every ``connect``/``disconnect``/``join``/``leave`` of an adapter goes through
one ``Batcher``: a FIFO with at most one batch in flight, so the backend applies
an adapter's changes in the order they were asked for (a leave can never
overtake its join), and a reconnect storm of thousands of joins costs a few
round trips instead of thousands. A batch belongs to one identity and is
applied atomically: all of it, or none of it when that identity is dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ..models import JsonObject

log = logging.getLogger(__name__)

APPLY_BATCH = 500

# result of one op: ``connect``: the user's open connections after it, -1 refused
# (limit); ``disconnect``: connections left, -1 not counted; ``join``: the user's
# connections in the channel after it, -1 already joined; ``leave``: connections
# left there, -1 not joined. ``None``: not applied, the identity was dead.
Result = int | None


@dataclass(frozen=True, slots=True)
class Op:
    """One change of one connection. ``restore``: part of a re-registration, whose
    first joins the adapter reports itself (no caller announces them)."""

    kind: str  # "connect" | "disconnect" | "join" | "leave"
    conn: str
    user: str
    channel: str = ""
    info: JsonObject = field(default_factory=dict)
    limit: int = 0
    restore: bool = False


@dataclass(slots=True)
class _Pending:
    identity: str
    op: Op
    future: asyncio.Future[Result]


Apply = Callable[[str, list[Op]], Awaitable[list[Result] | None]]
Applied = Callable[[str, Sequence[Op], Sequence[Result]], None]


class Batcher:
    """``apply(identity, ops)`` runs one batch on the backend: a result per op, or
    ``None`` if ``identity`` is dead (nothing applied). ``applied`` sees every batch's
    outcome before the callers do."""

    def __init__(self, apply: Apply, applied: Applied, *, max_batch: int = APPLY_BATCH) -> None:
        self._apply = apply
        self._applied = applied
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, identity: str, op: Op) -> asyncio.Future[Result]:
        """Queue ``op`` now (its place in the order is taken before any await)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(identity, op, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="presence-batcher")
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far has been applied (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._flush(self._take())
        finally:
            self._task = None
            while self._queue:  # only when cancelled: nothing will apply these any more
                pending = self._queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(ConnectionError("presence batcher stopped"))

    def _take(self) -> list[_Pending]:
        identity, batch = self._queue[0].identity, list[_Pending]()
        while self._queue and len(batch) < self._max_batch and self._queue[0].identity == identity:
            batch.append(self._queue.popleft())
        return batch

    async def _flush(self, batch: list[_Pending]) -> None:
        identity, ops = batch[0].identity, [p.op for p in batch]
        try:
            results = await self._apply(identity, ops)
        except BaseException as exc:
            # the callers re-raise it (a cancellation becomes an error: they were not cancelled)
            error = exc if isinstance(exc, Exception) else ConnectionError("presence batch cancelled")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        outcome: list[Result] = list(results) if results is not None else [None] * len(batch)
        try:
            self._applied(identity, ops, outcome)
        except Exception:
            log.exception("presence batch bookkeeping failed")
        for p, result in zip(batch, outcome, strict=True):
            if not p.future.done():
                p.future.set_result(result)
