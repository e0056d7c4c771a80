"""The rules every adapter shares, so that they only move rows.

Both adapters run an ``AppendPlan``: look up the batch's stored
``(channel, client_msg_id)`` keys, plan, advance each channel's head by its
count of new events and insert them atomically, then let the plan number the
events. So idempotency, in-batch repeats and contiguous ``seq`` assignment are
decided in one place. The atomic part differs: SQLite runs lookup and write in
one ``BEGIN IMMEDIATE`` transaction; PostgreSQL does the lookup outside any
transaction and the write as one statement, relying on the unique
``(channel, client_msg_id)`` index (a conflict retries the whole append; see
``PostgresEventStore._append``). Argument checks and value encoding live here too.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ..codec import dumps
from ..errors import AppError, ErrorCode
from ..models import MAX_SEQ, Appended, Event, JsonObject, NewEvent

Key = tuple[str, str]

# "no upper bound" for reads, as a value both databases index well


def upper_bound(before: int | None) -> int:
    return MAX_SEQ if before is None else before


def wants_prune(max_age_seconds: float | None, max_events: int | None) -> bool:
    """Whether a prune has anything to do; ``ValueError`` on a negative limit."""
    if (max_events is not None and max_events < 0) or (
        max_age_seconds is not None and max_age_seconds < 0
    ):
        raise ValueError("max_events and max_age_seconds must not be negative")
    return max_age_seconds is not None or max_events is not None


def check_epoch_selection(channels: Sequence[str] | None, namespace: str | None) -> list[str] | None:
    """The channel names a ``reset_epochs`` call selects (None: no list given);
    ``ValueError`` when it names both channels and a namespace."""
    if channels is not None and namespace is not None:
        raise ValueError("reset_epochs takes channels or a namespace, not both")
    return None if channels is None else list(dict.fromkeys(channels))


def idempotency_keys(batch: Sequence[NewEvent]) -> list[Key]:
    """Distinct ``(channel, client_msg_id)`` pairs of ``batch``, to look up before writing."""
    keys = ((item.channel, item.client_msg_id) for item in batch if item.client_msg_id is not None)
    return list(dict.fromkeys(keys))


class _RandomIds:
    """Random (version 4) UUIDs as text, from randomness read ahead in blocks:
    ``uuid.uuid4()`` makes a system call per id, which showed up per event under
    publish load. A forked child starts with an empty block of its own."""

    BLOCK = 16 * 256

    def __init__(self) -> None:
        self._block = b""
        self._next = 0

    def reset(self) -> None:
        self._block, self._next = b"", 0

    def __call__(self) -> str:
        at = self._next
        if at + 16 > len(self._block):
            self._block, at = os.urandom(self.BLOCK), 0
        self._next = at + 16
        h = self._block[at : at + 16].hex()
        # version 4 in the 13th hex digit, variant 10xx in the 17th (RFC 9562)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"
new_event_id = _RandomIds()
os.register_at_fork(after_in_child=new_event_id.reset)


def encode_data(data: JsonObject) -> str:
    """``data`` as JSON text for the database; ``AppError(bad_request)`` if it is not JSON."""
    try:
        return dumps(data).decode()
    except TypeError as exc:  # orjson: integers beyond 64 bits, lone surrogates, non-JSON types
        raise AppError(ErrorCode.BAD_REQUEST, f"event data is not storable JSON: {exc}") from exc


class AppendPlan:
    """Which items of a batch are new, and which repeat a stored or an earlier item.

    ``fresh`` holds the items to store, in batch order; ``counts`` how many of
    them each channel gets, sorted by channel name (the order heads are locked in).
    """

    def __init__(self, batch: Sequence[NewEvent], stored: Mapping[Key, Event]) -> None:
        self.fresh: list[NewEvent] = []
        # per batch item: the stored event it repeats, or its index in ``fresh``
        self._slots: list[Event | int] = []
        self._repeats: list[bool] = []
        seen: dict[Key, int] = {}
        for item in batch:
            key = None if item.client_msg_id is None else (item.channel, item.client_msg_id)
            if key is not None and key in stored:
                self._add(stored[key], repeat=True)
            elif key is not None and key in seen:
                self._add(seen[key], repeat=True)
            else:
                if key is not None:
                    seen[key] = len(self.fresh)
                self._add(len(self.fresh), repeat=False)
                self.fresh.append(item)
        self.counts = dict(sorted(Counter(item.channel for item in self.fresh).items()))

    def _add(self, slot: Event | int, *, repeat: bool) -> None:
        self._slots.append(slot)
        self._repeats.append(repeat)

    def events(
        self,
        heads: Mapping[str, int],
        ts: int,
        new_id: Callable[[], str] = new_event_id,
    ) -> list[Event]:
        """Number ``fresh`` given each channel's head *after* advancing it by ``counts``."""
        next_seq = {channel: heads[channel] - n + 1 for channel, n in self.counts.items()}
        created: list[Event] = []
        for item in self.fresh:
            seq = next_seq[item.channel]
            next_seq[item.channel] = seq + 1
            created.append(
                Event(
                    id=new_id(),
                    channel=item.channel,
                    seq=seq,
                    type=item.type,
                    data=item.data,
                    sender=item.sender,
                    ts=ts,
                    client_msg_id=item.client_msg_id,
                )
            )
        return created

    def results(self, created: Sequence[Event]) -> list[Appended]:
        """One ``Appended`` per batch item, aligned with the batch."""
        out: list[Appended] = []
        for slot, repeat in zip(self._slots, self._repeats, strict=True):
            event = slot if isinstance(slot, Event) else created[slot]
            out.append(Appended(event, duplicate=repeat))
        return out
