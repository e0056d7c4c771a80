"""Group commit: the publishes of every connection of this instance share transactions."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..codec import dumps
from ..errors import AppError, ErrorCode
from ..models import Appended, Event, NewEvent
from ..ports import EventStore
from ..telemetry import NullTelemetry, Telemetry

log = logging.getLogger(__name__)

OnCommit = Callable[[Sequence[Event]], None]

# An unescaped "\u0000" in encoded JSON: a NUL character, which PostgreSQL's
# jsonb and text types refuse.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(slots=True)
class _Pending:
    item: NewEvent
    future: asyncio.Future[Appended]


class GroupCommitWriter:
    """Commits ``submit``-ted events through ``store.append``, many per transaction.

    One loop task waits for the first queued item, takes everything queued (up
    to ``max_batch``), commits it, resolves each submitter, and repeats: at low
    load a publish waits for one commit, under load batches grow by themselves.
    Items are committed in submission order, so a channel's ``seq`` order is
    its submission order. ``on_commit`` sees each batch's new (non-duplicate)
    events in commit order before any submitter of the batch resumes. At most
    ``max_pending`` items wait; beyond that ``submit`` fails fast.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        max_batch: int = 512,
        max_pending: int = 10_000,
        on_commit: OnCommit | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be at least 1")
        self._store = store
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._on_commit = on_commit
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._committing = False
        self._idle = asyncio.Event()

    async def start(self) -> None:
        """Start the commit loop. Idempotent; items submitted earlier are committed now."""
        if self._closed:
            raise AppError(ErrorCode.UNAVAILABLE, "publish writer is closed", temporary=True)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def close(self) -> None:
        """Stop accepting, commit everything already queued, and wait for the loop. Idempotent."""
        self._closed = True
        self._wakeup.set()
        if self._task is None:
            self._fail(self._drain(), _stopped())
            return
        # shielded: cancelling shutdown must not abort a commit whose outcome
        # the submitters would then never learn
        await asyncio.shield(self._task)

    async def submit(self, item: NewEvent, *, encoded: bytes | None = None) -> Appended:
        """Queue ``item`` and wait until it is committed (or found to be a duplicate).
        ``encoded``: ``item.data`` as JSON, when the caller encoded it already.

        Raises ``AppError``: ``unavailable`` (temporary) when the writer is
        closed, the queue is full or the store failed; ``bad_request`` when the
        item holds text no store can keep (NUL characters, lone surrogates);
        ``internal`` on an unexpected failure. Cancelling the caller does not
        disturb anyone else's publish.
        """
        return await self.enqueue(item, encoded=encoded)

    def enqueue(self, item: NewEvent, *, encoded: bytes | None = None) -> asyncio.Future[Appended]:
        """``submit`` without awaiting: queue ``item`` now and return the future its
        outcome will resolve (with an ``Appended`` or one of ``submit``'s errors).
        Refusals raise here. Cancelling the future before its batch forms withdraws
        the item; once committed, the future is resolved whatever the caller did."""
        if self._closed:
            raise AppError(ErrorCode.UNAVAILABLE, "publish writer is closed", temporary=True)
        if len(self._queue) >= self._max_pending:
            raise AppError(ErrorCode.UNAVAILABLE, "publish queue full", temporary=True)
        check_storable(item, encoded)
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future))
        self._wakeup.set()
        return future

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed) and acked."""
        while self._queue or self._committing:
            self._idle.clear()
            await self._idle.wait()

    async def _run(self) -> None:
        try:
            while self._queue or not self._closed:
                if not self._queue:
                    self._idle.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                self._committing = True
                try:
                    await self._commit(self._take())
                finally:
                    self._committing = False
        finally:
            self._fail(self._drain(), _stopped())
            self._idle.set()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._max_batch:
            pending = self._queue.popleft()
            # a submitter cancelled before its batch formed never got an ack
            # and may retry: storing its event now could only duplicate it
            if not pending.future.done():
                batch.append(pending)
        return batch

    def _drain(self) -> list[_Pending]:
        drained = list(self._queue)
        self._queue.clear()
        return drained

    async def _commit(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        try:
            results = await self._store.append([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"store returned {len(results)} results for {len(batch)} events")
        except asyncio.CancelledError:
            self._fail(batch, _stopped())
            raise
        except AppError as exc:
            self._telemetry.store_failed("append")
            self._fail(batch, exc)
            return
        except Exception:
            self._telemetry.store_failed("append")
            log.exception("committing a batch of %d events failed", len(batch))
            self._fail(batch, AppError(ErrorCode.INTERNAL, "could not store the event"))
            return
        self._telemetry.batch_committed(len(batch), time.perf_counter() - started)
        self._notify([r.event for r in results if not r.duplicate])
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _notify(self, events: list[Event]) -> None:
        if self._on_commit is None or not events:
            return
        try:
            self._on_commit(events)
        except Exception:
            # the events are committed: their publishers still get their acks
            log.exception("on_commit callback failed for %d events", len(events))

    @staticmethod
    def _fail(batch: list[_Pending], exc: AppError) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)


def _stopped() -> AppError:
    return AppError(ErrorCode.UNAVAILABLE, "publish writer stopped", temporary=True)


def check_storable(item: NewEvent, encoded: bytes | None = None) -> None:
    """Raise ``AppError(bad_request)`` unless every store can keep ``item``;
    ``encoded`` is ``item.data`` as JSON when the caller has it already.

    Checked per item before batching: one such event would otherwise fail the
    whole transaction, and with it the publishes of everyone else in the batch.
    """
    for name, text in (
        ("type", item.type),
        ("sender", item.sender),
        ("client_msg_id", item.client_msg_id),
        ("channel", item.channel),
    ):
        if text is not None and not _storable_text(text):
            raise AppError(ErrorCode.BAD_REQUEST, f"{name} contains a NUL or an invalid character")
    try:
        if encoded is None:
            encoded = dumps(item.data)
    except TypeError as exc:  # orjson: lone surrogates, integers beyond 64 bits, ...
        raise AppError(ErrorCode.BAD_REQUEST, f"data is not storable JSON: {exc}") from exc
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded) is not None:
        raise AppError(ErrorCode.BAD_REQUEST, "data contains a NUL character (\\u0000)")


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
