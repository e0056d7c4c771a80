"""What the domain reports about itself. ``server/metrics.py`` turns it into Prometheus metrics.

The domain calls these on hot paths: implementations must be cheap and must not
raise. ``NullTelemetry`` is the default where nothing listens.
"""

from __future__ import annotations

from typing import Protocol


class Telemetry(Protocol):
    def published(self, transport: str, outcome: str, seconds: float) -> None:
        """A publish finished: ``outcome`` is ``ok``, ``duplicate`` or an error code;
        ``seconds`` from the call to the commit (or the failure)."""

    def batch_committed(self, size: int, seconds: float) -> None:
        """The group-commit writer committed ``size`` events in one transaction."""

    def store_failed(self, operation: str) -> None:
        """A store call failed (``append``, ``read``, ``prune``, ...)."""

    def broker_failed(self, operation: str) -> None:
        """A broker call failed (``publish``, ``subscribe``, ...)."""

    def broker_resumed(self) -> None:
        """Broker delivery was interrupted and resumed (reconnect or overflow)."""

    def delivered(self, recipients: int, age_seconds: float) -> None:
        """One event handed to ``recipients`` local connections, ``age_seconds`` after its commit."""

    def gap_filled(self, events: int) -> None:
        """``events`` were read from the store because the broker had not delivered them."""

    def handoff_failed(self) -> None:
        """Handing an event to local connections (``Delivery.broadcast``) failed; it is retried."""

    def relay_dropped(self, messages: int) -> None:
        """The broker relay's backlog overflowed: ``messages`` were not published
        (other instances fill the events from the store)."""

    def pruned(self, events: int) -> None:
        """Retention deleted ``events``."""

    def disconnected(self, reason: str) -> None:
        """A connection ended, for ``reason`` (``client``, ``transport``, ``shutdown``, ...)."""

    def refused(self, code: str) -> None:
        """A connection attempt was refused with ``code``."""


class NullTelemetry(Telemetry):
    """Reports nothing."""

    def published(self, transport: str, outcome: str, seconds: float) -> None: ...
    def batch_committed(self, size: int, seconds: float) -> None: ...
    def store_failed(self, operation: str) -> None: ...
    def broker_failed(self, operation: str) -> None: ...
    def broker_resumed(self) -> None: ...
    def delivered(self, recipients: int, age_seconds: float) -> None: ...
    def gap_filled(self, events: int) -> None: ...
    def handoff_failed(self) -> None: ...
    def relay_dropped(self, messages: int) -> None: ...
    def pruned(self, events: int) -> None: ...
    def disconnected(self, reason: str) -> None: ...
    def refused(self, code: str) -> None: ...
