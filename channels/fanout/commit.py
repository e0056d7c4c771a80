"""What happens to events once the group-commit writer has committed them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..models import Event
from ..relay import BrokerRelay
from .fanout import Fanout


def after_commit(fanout: Fanout, relay: BrokerRelay) -> Callable[[Sequence[Event]], None]:
    """The writer's ``on_commit`` hook: this instance's subscribers get the events at
    once (no broker round trip), every other instance through the broker. The
    broker's echo back to this instance is a duplicate the order buffer drops; a
    lost broker message is filled from the store by each receiving instance."""

    def on_commit(events: Sequence[Event]) -> None:
        fanout.on_local_commit(events)
        relay.push(events)

    return on_commit
