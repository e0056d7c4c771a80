"""The live counters of one worker process, shipped to the coordinator as snapshots.

Counters are cumulative (the coordinator keeps each worker's latest); latency
histograms are shipped as deltas (the coordinator merges them into the totals
and into the per-second timeline), so a snapshot stays small however long the
run. All timestamps are wall-clock seconds (``time.time()``), comparable across
the worker processes of one machine.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .stats import Histogram

HISTOGRAMS = ("delivery", "ack", "connect", "recovery", "rest")


@dataclass
class Meter:
    """What one worker has done so far. Scenarios write, the worker loop snapshots."""

    connected: int = 0
    peak_connected: int = 0
    connects: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first detail seen
    disconnects: Counter[str] = field(default_factory=Counter)
    published: int = 0
    acked: int = 0
    publish_failures: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0
    reconnects: int = 0
    not_recovered: int = 0
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    first_publish: float | None = None
    last_ack: float | None = None
    last_delivery: float | None = None
    histograms: dict[str, Histogram] = field(default_factory=lambda: {name: Histogram() for name in HISTOGRAMS})

    def __post_init__(self) -> None:
        # histograms are emptied in place when shipped, so the bound method stays valid
        self._delivery_latency = self.histograms["delivery"].record

    def delivered(self, sent_at: float, now: float) -> None:
        """One event received; ``sent_at`` is the publisher's clock when it published."""
        self.deliveries += 1
        self.last_delivery = now
        self._delivery_latency(now - sent_at if now > sent_at else 0.0)

    def failed(self, counter: Counter[str], reason: str, detail: str = "") -> None:
        """Count a failure by reason, keeping the first detail of each reason to show the user."""
        counter[reason] += 1
        if detail and reason not in self.examples:
            self.examples[reason] = detail[:300]

    def publish_sent(self, now: float) -> None:
        self.published += 1
        if self.first_publish is None:
            self.first_publish = now

    def publish_acked(self, started: float, now: float) -> None:
        self.acked += 1
        self.last_ack = now
        self.histograms["ack"].record(now - started)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counters plus the histogram samples recorded since the last snapshot."""
        cpu = os.times()
        return {
            "t": time.time(),
            "connected": self.connected,
            "peak_connected": self.peak_connected,
            "connects": self.connects,
            "connect_failures": dict(self.connect_failures),
            "disconnects": dict(self.disconnects),
            "examples": dict(self.examples),
            "published": self.published,
            "acked": self.acked,
            "publish_failures": dict(self.publish_failures),
            "deliveries": self.deliveries,
            "reconnects": self.reconnects,
            "not_recovered": self.not_recovered,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "first_publish": self.first_publish,
            "last_ack": self.last_ack,
            "last_delivery": self.last_delivery,
            "cpu_s": cpu.user + cpu.system,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "hist": {name: h.take().to_dict() for name, h in self.histograms.items() if h.count},
        }
