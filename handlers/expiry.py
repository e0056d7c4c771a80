"""When each connection's token needs attention: one heap for all connections.

A connection whose token expires at ``exp`` is warned at ``exp - lead``
(``expiring``; at once if that has passed) and closed at ``exp + grace`` unless a
refresh moved ``exp`` on. Rescheduling pushes new entries and leaves the old
ones to be skipped when they come due (lazy deletion), so 10,000 connections
cost one timer task and O(log n) per connect or refresh, not a task each.
Pure: the caller passes ``now`` (seconds since the epoch, like ``exp``).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from enum import Enum


class Due(Enum):
    WARN = "warn"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Deadline:
    conn_id: str
    action: Due
    expires_at: float


class ExpiryClock:
    def __init__(self, *, lead: float, grace: float) -> None:
        if lead < 0 or grace < 0:
            raise ValueError("lead and grace must not be negative")
        self.lead = lead
        self.grace = grace
        self._heap: list[tuple[float, int, str, Due]] = []
        self._current: dict[str, tuple[int, float]] = {}  # conn -> (generation, expires_at)
        self._generations = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def track(self, conn_id: str, expires_at: float | None, now: float) -> None:
        """(Re)schedule ``conn_id`` for a token expiring at ``expires_at`` (``None``: never)."""
        if expires_at is None:
            self.forget(conn_id)
            return
        generation = next(self._generations)
        self._current[conn_id] = (generation, expires_at)
        if self.lead > 0:
            heapq.heappush(self._heap, (max(now, expires_at - self.lead), generation, conn_id, Due.WARN))
        heapq.heappush(self._heap, (expires_at + self.grace, generation, conn_id, Due.CLOSE))
        self._compact()

    def forget(self, conn_id: str) -> None:
        self._current.pop(conn_id, None)

    def due(self, now: float) -> list[Deadline]:
        """Everything due by ``now``, in time order; each deadline is returned once."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, generation, conn_id, action = heapq.heappop(self._heap)
            current = self._current.get(conn_id)
            if current is None or current[0] != generation:
                continue  # refreshed or gone since this was scheduled
            if action is Due.CLOSE:
                del self._current[conn_id]
            out.append(Deadline(conn_id, action, current[1]))
        return out

    def _compact(self) -> None:
        # refreshes leave stale entries behind; rebuild when they dominate
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._current):
            live = {(g, c) for c, (g, _) in self._current.items()}
            self._heap = [e for e in self._heap if (e[1], e[2]) in live]
            heapq.heapify(self._heap)
