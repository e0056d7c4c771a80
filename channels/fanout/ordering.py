"""A channel's ordering buffer: events in, the same events out in ``seq`` order, once each.

Events reach an instance from three sides (its own group-commit writer, the broker
for every instance's commits, the store when a gap is filled) in any order and any
number of times. The buffer releases ``head + 1``, ``head + 2``, ... and nothing
else: a later event waits while an earlier one is missing (a gap, which the gap
filler closes from the store), a seq at or below ``head`` is a duplicate and dropped.
"""

from __future__ import annotations

from ..models import Event


class OrderBuffer:
    """Not started (``head == -1``) until ``start`` gives the channel's head at
    activation: events offered before that are kept and sorted out then."""

    __slots__ = ("_pending", "head")

    def __init__(self) -> None:
        self.head = -1  # highest seq released; everything at or below it is a duplicate
        self._pending: dict[int, Event] = {}

    @property
    def started(self) -> bool:
        return self.head >= 0

    def start(self, head: int) -> None:
        """Begin after ``head`` (the store's head when the channel went live)."""
        self.head = head
        self._drop_released()

    def offer(self, event: Event) -> bool:
        """Keep ``event`` for release; False when it is a duplicate."""
        if event.seq <= self.head:
            return False
        self._pending[event.seq] = event
        return True

    def take(self) -> list[Event]:
        """The events that are next in order, removed from the buffer (none before ``start``)."""
        out: list[Event] = []
        if not self.started:
            return out
        while (event := self._pending.pop(self.head + 1, None)) is not None:
            self.head = event.seq
            out.append(event)
        return out

    @property
    def has_gap(self) -> bool:
        """Something waits for an earlier seq that has not arrived (after ``take``)."""
        return bool(self._pending)

    def first_waiting(self) -> int | None:
        """The lowest seq held back by a gap, if any."""
        return min(self._pending, default=None)

    def skip_to(self, seq: int) -> None:
        """Give up on every seq up to ``seq``: retention removed them from the store."""
        if seq > self.head:
            self.head = seq
            self._drop_released()

    def _drop_released(self) -> None:
        for seq in [s for s in self._pending if s <= self.head]:
            del self._pending[seq]
