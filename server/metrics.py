"""Prometheus metrics: ``PrometheusTelemetry`` implements the domain's ``Telemetry``.

Each app has its own ``CollectorRegistry`` (two apps in one process must not
share counters). Gauges of current state (connections, subscriptions, live
channels) are read at scrape time instead of being kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from channels.telemetry import Telemetry

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PrometheusTelemetry(Telemetry):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._publishes = Counter("switchboard_publishes", "Publishes by transport and outcome (ok, duplicate, or an error code)",
                                  ["transport", "outcome"], registry=registry)
        self._publish_seconds = Histogram("switchboard_publish_seconds", "Publish call to commit (what the ack waits for)",
                                          ["transport"], buckets=LATENCY_BUCKETS, registry=registry)
        self._publish_counts: dict[tuple[str, str], Counter] = {}
        self._publish_timings: dict[str, Histogram] = {}
        self._batch_size = Histogram("switchboard_commit_batch_size", "Events per group-commit transaction",
                                     buckets=BATCH_BUCKETS, registry=registry)
        self._commit_seconds = Histogram("switchboard_commit_seconds", "Duration of one group-commit transaction",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self._store_errors = Counter("switchboard_store_errors", "Failed store operations", ["operation"], registry=registry)
        self._broker_errors = Counter("switchboard_broker_errors", "Failed broker operations", ["operation"], registry=registry)
        self._broker_resumes = Counter("switchboard_broker_resumes", "Broker delivery interrupted and resumed (reconnects)",
                                       registry=registry)
        self._deliveries = Counter("switchboard_deliveries", "Events handed to local connections (one per recipient)",
                                   registry=registry)
        self._delivery_latency = Histogram("switchboard_delivery_latency_seconds",
                                           "Commit to hand-off to local sockets, through the broker when remote",
                                           buckets=LATENCY_BUCKETS, registry=registry)
        self._gap_filled = Counter("switchboard_gap_fill_events", "Events read from the store to fill broker gaps",
                                   registry=registry)
        self._handoff_failures = Counter("switchboard_handoff_failures",
                                         "Failed hand-offs of an event to local connections (each is retried)",
                                         registry=registry)
        self._relay_dropped = Counter("switchboard_relay_dropped_messages",
                                      "Messages dropped from a full broker relay backlog (events are filled from the store)",
                                      registry=registry)
        self._pruned = Counter("switchboard_pruned_events", "Events deleted by retention", registry=registry)
        self._disconnects = Counter("switchboard_disconnects", "Connections ended, by reason", ["reason"], registry=registry)
        self._refused = Counter("switchboard_connections_refused", "Connection attempts refused, by code", ["code"],
                                registry=registry)
        self._protocol_errors = Counter("switchboard_protocol_errors",
                                        "Packets that broke the Engine.IO / Socket.IO protocol, by kind", ["kind"],
                                        registry=registry)

    def published(self, transport: str, outcome: str, seconds: float) -> None:
        # once per publish: the labelled children are looked up once, not per call
        # (``labels()`` takes a lock and builds a key every time)
        count = self._publish_counts.get((transport, outcome))
        if count is None:
            count = self._publish_counts[transport, outcome] = self._publishes.labels(transport, outcome)
        timing = self._publish_timings.get(transport)
        if timing is None:
            timing = self._publish_timings[transport] = self._publish_seconds.labels(transport)
        count.inc()
        timing.observe(seconds)

    def batch_committed(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._commit_seconds.observe(seconds)

    def store_failed(self, operation: str) -> None:
        self._store_errors.labels(operation).inc()

    def broker_failed(self, operation: str) -> None:
        self._broker_errors.labels(operation).inc()

    def broker_resumed(self) -> None:
        self._broker_resumes.inc()

    def delivered(self, recipients: int, age_seconds: float) -> None:
        if recipients > 0:
            self._deliveries.inc(recipients)
            self._delivery_latency.observe(max(age_seconds, 0.0))

    def gap_filled(self, events: int) -> None:
        self._gap_filled.inc(events)

    def handoff_failed(self) -> None:
        self._handoff_failures.inc()

    def relay_dropped(self, messages: int) -> None:
        self._relay_dropped.inc(messages)

    def pruned(self, events: int) -> None:
        self._pruned.inc(events)

    def disconnected(self, reason: str) -> None:
        self._disconnects.labels(reason).inc()

    def refused(self, code: str) -> None:
        self._refused.labels(code).inc()

    def protocol_error(self, kind: str) -> None:
        """Not part of the domain's ``Telemetry``: the transport reports these (server/protocol.py)."""
        self._protocol_errors.labels(kind).inc()


class StateCollector(Collector):
    """Gauges computed at scrape time from the live objects."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], int]]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        for name, (doc, read) in self._gauges.items():
            yield GaugeMetricFamily(name, doc, value=read())


def metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handler
