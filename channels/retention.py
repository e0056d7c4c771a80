"""Retention: prune every namespace by its options, periodically, on every instance.

Pruning is idempotent, so instances need no coordination; each pass costs one
query per namespace.
"""

from __future__ import annotations

import asyncio
import logging
import random

from .errors import describe
from .namespaces import NamespaceRules
from .ports import EventStore
from .telemetry import NullTelemetry, Telemetry

log = logging.getLogger(__name__)


class Retention:
    def __init__(
        self,
        store: EventStore,
        rules: NamespaceRules,
        *,
        interval: float = 60.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._interval = interval
        self._telemetry: Telemetry = telemetry or NullTelemetry()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One pass over every namespace in the store; returns the events deleted."""
        deleted = 0
        for namespace in await self._store.namespaces():
            options = self._rules.for_namespace(namespace)
            if options.history_max_age_seconds is None and options.history_max_events is None:
                continue
            deleted += await self._store.prune(
                namespace,
                max_age_seconds=options.history_max_age_seconds,
                max_events=options.history_max_events,
            )
        if deleted:
            self._telemetry.pruned(deleted)
            log.info("retention deleted %d events", deleted)
        return deleted

    async def start(self) -> None:
        """Run ``run_once`` every ``interval`` seconds (0 disables) until ``close``."""
        if self._interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        # jitter: instances started together should not prune in lockstep
        await asyncio.sleep(self._interval * random.uniform(0.1, 1.0))
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the next pass retries; retention is never urgent
                self._telemetry.store_failed("prune")
                log.warning("retention pass failed: %s", describe(exc))
            await asyncio.sleep(self._interval)
