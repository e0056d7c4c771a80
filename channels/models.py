"""Value objects that cross the domain's ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]

MAX_SEQ = 2**63 - 1  # seqs are 64-bit signed in every store


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated, authorized publish waiting to be committed (it has no ``seq`` yet)."""

    channel: str
    type: str
    data: JsonObject
    sender: str
    client_msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A committed event. ``seq`` is its gapless position in ``channel`` (1, 2, 3, ...).

    ``ts`` is the commit time in milliseconds since the Unix epoch.
    """

    id: str
    channel: str
    seq: int
    type: str
    data: JsonObject
    sender: str
    ts: int
    client_msg_id: str | None = None

    def wire(self) -> JsonObject:
        """The event as clients see it (socket ``event`` payload and REST items)."""
        return {
            "id": self.id,
            "channel": self.channel,
            "seq": self.seq,
            "type": self.type,
            "data": self.data,
            "sender": self.sender,
            "ts": self.ts,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one publish: the stored event, and whether it was stored before."""

    event: Event
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ChannelBounds:
    """What the store holds of a channel.

    ``head`` is the last committed ``seq`` (0 for a channel never published to).
    ``first`` is the lowest ``seq`` still retained; ``head + 1`` when nothing is
    retained. ``epoch`` names the history these seqs belong to: a short random
    string, new whenever the channel's history is (re)created or declared unable
    to continue (``EventStore.reset_epochs``, after a restore); ``""`` while the
    channel has no history at all. A position is ``(epoch, seq)``: the same seq
    in another epoch is another event.
    """

    head: int
    first: int
    epoch: str = ""

    def can_recover(self, since: int, epoch: str | None = None) -> bool:
        """Whether a client that saw everything up to ``since`` can be sent exactly
        what it missed from the store: ``first - 1 <= since <= head``, and ``since``
        belongs to this history. ``epoch`` None (a client that sends none) is
        trusted as before epochs existed; ``since`` 0 (nothing seen) belongs to
        every history."""
        if epoch is not None and epoch != self.epoch and since != 0:
            return False
        return self.first - 1 <= since <= self.head


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a verified JWT."""

    sub: str
    channels: tuple[str, ...] = ()
    role: str | None = None
    expires_at: float | None = None
    info: JsonObject = field(default_factory=dict)

    @property
    def is_server(self) -> bool:
        return self.role == "server"


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One user present in a channel: how many of its connections joined, and the
    ``info`` claim of its token (as given by the most recent of them to join)."""

    user: str
    connections: int
    info: JsonObject = field(default_factory=dict)

    def wire(self) -> JsonObject:
        return {"user": self.user, "connections": self.connections, "info": self.info}


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A user's first connection joined (``join``) or its last one left (``leave``)."""

    channel: str
    user: str
    action: str  # "join" | "leave"

    def wire(self) -> JsonObject:
        return {"channel": self.channel, "user": self.user, "action": self.action}


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """Connections joined to a channel across all instances, and distinct users among them."""

    connections: int
    users: int
