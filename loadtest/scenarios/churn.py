"""``churn``: fan-out while subscribers disconnect and come back with ``since``.

Rolling churn: every ``--churn-interval`` a ``--churn-fraction`` of this
worker's connected subscribers disconnect, stay away ``--churn-offline``
seconds, reconnect and re-subscribe with ``since`` = the highest seq they saw
(what a real app does). Their ``SeqTracker`` carries over, so a gap or a
duplicate at the switch-over shows up in the integrity counts like any other.

Storm (``--storm``): at a third of the run every subscriber drops at once and,
after the offline pause, all reconnect at once; the run reports the time from
the reconnect until the last one has its subscribe ack (its missed events are
replayed before the ack, so the ack means recovered).
"""

from __future__ import annotations

import asyncio
import random
import time

from .base import Json, WorkerContext
from .fanout import FanoutScenario, Subscriber

ATTEMPTS = 3  # reconnect tries per cycle, a second apart, before a subscriber counts as gone


class ChurnScenario(FanoutScenario):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.storm: Json = {}
        self._cycles: set[asyncio.Task[None]] = set()

    async def background(self, go: Json, deadline: float) -> None:
        if self.spec.storm:
            await self._storm(float(go["storm_at"]))
        else:
            await self._rolling(deadline)

    async def _rolling(self, deadline: float) -> None:
        rng = random.Random(self.ctx.worker)
        while time.time() + self.spec.churn_interval < deadline and not self.ctx.stopping.is_set():
            await self.ctx.sleep_until(time.time() + self.spec.churn_interval)
            ready = [s for s in self.subscribers if s.client is not None and s.client.connected and not s.cycling]
            count = max(1, round(len(ready) * self.spec.churn_fraction)) if ready else 0
            for sub in rng.sample(ready, count):
                sub.cycling = True
                task = asyncio.create_task(self._cycle(sub))
                self._cycles.add(task)
                task.add_done_callback(self._cycles.discard)
        await asyncio.gather(*self._cycles)

    async def _cycle(self, sub: Subscriber) -> None:
        await self._leave(sub)
        await asyncio.sleep(self.spec.churn_offline)
        await self.recover(sub)
        sub.cycling = False

    async def _leave(self, sub: Subscriber) -> None:
        if sub.client is not None:
            client, sub.client = sub.client, None
            await self.ctx.close_client(client)

    async def recover(self, sub: Subscriber) -> float | None:
        """Reconnect and re-subscribe with ``since``; the ack time, or None (then ``sub`` is gone)."""
        assert sub.tracker is not None
        started = time.time()
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(1.0)
            acked = await self.subscribe(sub, since=sub.tracker.highest)
            if acked is not None:
                self.meter.reconnects += 1
                self.meter.histograms["recovery"].record(acked - started)
                return acked
        sub.gone = True
        return None

    async def _storm(self, at: float) -> None:
        await self.ctx.sleep_until(at)
        victims = [s for s in self.subscribers if s.client is not None and s.client.connected]
        self.ctx.mark("storm_disconnect")
        await asyncio.gather(*(self._leave(s) for s in victims))
        await asyncio.sleep(self.spec.churn_offline)
        self.ctx.mark("storm_reconnect")
        started = time.time()
        acks = await asyncio.gather(*(self.recover(s) for s in victims))
        done = [t for t in acks if t is not None]
        self.storm = {"clients": len(victims), "recovered": len(done), "start": started,
                      "end": max(done) if done else None}

    def result(self) -> Json:
        out = super().result()
        out["storm"] = self.storm
        return out
