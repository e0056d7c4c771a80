"""Small in-process stand-ins for unit tests of the fan-out (contract suites test the real adapters)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from channels import codec
from channels.models import Appended, ChannelBounds, Event, NewEvent, PresenceChange
from channels.ports import Broker, BrokerListener, Delivery, EventStore
from channels.telemetry import NullTelemetry


def make_event(channel: str, seq: int) -> Event:
    return Event(id=f"{channel}#{seq}", channel=channel, seq=seq, type="t", data={"n": seq}, sender="s", ts=seq)


class ListStore(EventStore):
    """Events kept in lists; ``first`` can be raised to emulate retention."""

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = defaultdict(list)
        self.first: dict[str, int] = defaultdict(lambda: 1)
        self.epochs: dict[str, str] = defaultdict(lambda: "e1")
        self.reads = 0

    def put(self, channel: str, upto: int) -> list[Event]:
        have = len(self.events[channel])
        new = [make_event(channel, s) for s in range(have + 1, upto + 1)]
        self.events[channel].extend(new)
        return new

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def append(self, batch: Sequence[NewEvent]) -> list[Appended]:
        raise NotImplementedError

    async def read(self, channel: str, *, after: int = 0, before: int | None = None, limit: int) -> list[Event]:
        self.reads += 1
        await asyncio.sleep(0)
        floor = max(after, self.first[channel] - 1)
        rows = [e for e in self.events[channel] if e.seq > floor and (before is None or e.seq < before)]
        return rows[:limit]

    async def read_last(self, channel: str, *, before: int | None = None, limit: int) -> list[Event]:
        rows = [e for e in self.events[channel] if e.seq >= self.first[channel] and (before is None or e.seq < before)]
        return rows[-limit:]

    async def bounds(self, channel: str) -> ChannelBounds:
        head = len(self.events[channel])
        return ChannelBounds(head, min(self.first[channel], head + 1), self.epochs[channel])

    async def ensure(self, channel: str) -> ChannelBounds:
        return await self.bounds(channel)

    async def reset_epochs(self, *, channels: Sequence[str] | None = None, namespace: str | None = None) -> int:
        names = list(channels if channels is not None else self.events)
        for name in names:
            self.epochs[name] += "+"
        return len(names)

    async def heads(self, channels: Sequence[str]) -> dict[str, int]:
        return {c: len(self.events[c]) for c in channels}

    async def namespaces(self) -> list[str]:
        return sorted({c.split(":", 1)[0] for c in self.events})

    async def prune(self, namespace: str, *, max_age_seconds: float | None = None, max_events: int | None = None) -> int:
        return 0


class RecordingBroker(Broker):
    def __init__(self) -> None:
        self.subscribed: set[str] = set()
        self.history: list[tuple[str, str]] = []
        self.listener: BrokerListener | None = None

    async def start(self, listener: BrokerListener) -> None:
        self.listener = listener

    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        self.subscribed.add(channel)
        self.history.append(("subscribe", channel))

    async def unsubscribe(self, channel: str) -> None:
        self.subscribed.discard(channel)
        self.history.append(("unsubscribe", channel))

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None: ...

    def deliver(self, event: Event) -> None:
        assert self.listener is not None
        self.listener.on_message(event.channel, codec.encode_event(event))


class RecordingDelivery(Delivery):
    """Per-connection received seqs; a broadcast yields once per member like a real emit."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[str]] = defaultdict(set)
        self.received: dict[str, list[int]] = defaultdict(list)
        self.presence_seen: dict[str, list[PresenceChange]] = defaultdict(list)

    async def broadcast(self, channel: str, event: Event) -> None:
        for conn in list(self.rooms[channel]):
            self.received[conn].append(event.seq)
        await asyncio.sleep(0)

    async def send(self, conn_id: str, event: Event) -> None:
        self.received[conn_id].append(event.seq)
        await asyncio.sleep(0)

    async def writable(self, conn_id: str) -> bool:
        return True

    async def join(self, conn_id: str, channel: str) -> None:
        self.rooms[channel].add(conn_id)

    async def leave(self, conn_id: str, channel: str) -> None:
        self.rooms[channel].discard(conn_id)

    async def presence(self, change: PresenceChange) -> None:
        for conn in list(self.rooms[change.channel]):
            self.presence_seen[conn].append(change)
        await asyncio.sleep(0)


class CountingTelemetry(NullTelemetry):
    """Counts what the fan-out reports that tests assert on."""

    def __init__(self) -> None:
        self.gap_fill_events = 0
        self.handoff_failures = 0

    def gap_filled(self, events: int) -> None:
        self.gap_fill_events += events

    def handoff_failed(self) -> None:
        self.handoff_failures += 1
