"""``fanout``: N subscribers over K channels, P publishers; deliveries, latency, integrity.

Subscriber ``i`` subscribes to channel ``i % K``. Publisher ``j``'s ``n``-th
event goes to channel ``(j + n*P) % K`` and carries ``{t, p, n, pad}``: ``t``
is the publisher's wall clock, so every delivery yields a publish-to-receive
latency (worker processes of one machine share the clock). Publishers either
pace at ``--rate`` (total, staggered so that it is even) or publish as fast as acks allow, keeping at most
``--window`` unacknowledged; either way they stop at ``--events`` or
``--duration``. Every subscription feeds a ``SeqTracker``: after the run each
subscriber must hold every seq of its channel from its subscribe ``head`` up
to the highest acknowledged seq, once and in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..client import ClientFailure, EventHandler, SimClient, call
from ..stats import Integrity, SeqTracker
from .base import Json, WorkerContext, WorkerScenario


@dataclass(eq=False)
class Subscriber:
    """One simulated subscriber; its tracker outlives its connections (churn reconnects)."""

    index: int
    channel: str
    client: SimClient | None = None
    tracker: SeqTracker | None = None
    early: list[int] = field(default_factory=list)  # seqs that beat the subscribe ack
    cycling: bool = False
    gone: bool = False  # left and never came back


def error_code(ack: Any) -> str:
    """The ``error.code`` of a failed ack, or ``bad_ack`` when the ack is not shaped like one."""
    if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
        return str(ack["error"].get("code", "error"))
    return "bad_ack"


class FanoutScenario(WorkerScenario):
    """Subscribers and publishers of one worker; ``ChurnScenario`` adds reconnects."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.subscribers: list[Subscriber] = []
        self.publishers: list[tuple[int, SimClient]] = []
        self.acked_heads: dict[str, int] = {}
        self.heads: dict[str, int] = {}
        self.strays = 0

    # -- setup ---------------------------------------------------------------

    async def setup(self) -> Json:
        spec = self.spec
        self.ctx.mark("ramp_start")
        self.subscribers = [Subscriber(i, spec.channel(i)) for i in spec.owned(spec.clients, self.ctx.worker)]
        by_index = {s.index: s for s in self.subscribers}
        await self.ctx.ramp(by_index, lambda i: self._first_subscribe(by_index[i]))
        await self.ctx.ramp(spec.owned(spec.publishers, self.ctx.worker), self._open_publisher)
        self.ctx.mark("ramp_end")
        return {"subscribed": sum(1 for s in self.subscribers if s.client is not None)}

    async def _first_subscribe(self, sub: Subscriber) -> None:
        await self.subscribe(sub, since=None)

    async def _open_publisher(self, j: int) -> None:
        client = await self.ctx.open_client(self.spec.clients + j)  # own identities, after the subscribers'
        if client is not None:
            self.publishers.append((j, client))

    def _handler(self, sub: Subscriber) -> EventHandler:
        delivered = self.meter.delivered

        def on_event(event: dict[str, Any]) -> None:
            now = time.time()
            try:
                seq, sent = event["seq"], event["data"]["t"]
                if event["channel"] != sub.channel:
                    raise KeyError("channel")
            except (KeyError, TypeError):
                self.strays += 1
                return
            tracker = sub.tracker
            if tracker is None:
                sub.early.append(seq)
            else:
                tracker.add(seq)
            delivered(sent, now)

        return on_event

    async def subscribe(self, sub: Subscriber, since: int | None) -> float | None:
        """Connect ``sub`` and subscribe (with ``since`` when recovering); the ack time, or None."""
        client = await self.ctx.open_client(sub.index, self._handler(sub))
        if client is None:
            return None
        payload: dict[str, Any] = {"channel": sub.channel}
        if since is not None:
            payload["since"] = since
        try:
            ack = await call(client, "subscribe", payload, self.spec.ack_timeout)
        except ClientFailure as exc:
            ack = {"error": {"code": exc.reason}}
        if not (isinstance(ack, dict) and ack.get("ok")):
            self.meter.failed(self.meter.connect_failures, f"subscribe:{error_code(ack)}", str(ack))
            await self.ctx.close_client(client)
            return None
        if ack.get("recovered") is False:
            self.meter.not_recovered += 1
        if sub.tracker is None:
            sub.tracker = SeqTracker(start=int(ack.get("head") or 0))
            for seq in sub.early:
                sub.tracker.add(seq)
            sub.early.clear()
        sub.client = client
        return time.time()

    # -- run -----------------------------------------------------------------

    async def run(self, go: Json) -> Json:
        start = float(go["start"])
        await self.ctx.sleep_until(start)
        self.ctx.mark("publish_start")
        deadline = start + self.spec.duration
        background = asyncio.create_task(self.background(go, deadline))
        await asyncio.gather(*(self._publish(j, client, start, deadline) for j, client in self.publishers))
        self.ctx.mark("publish_end")
        await background
        return {"acked_heads": self.acked_heads}

    async def background(self, go: Json, deadline: float) -> None:
        """What runs beside the publishers (churn); nothing here."""

    def _quota(self, j: int) -> int | None:
        events, pubs = self.spec.events, self.spec.publishers
        return events // pubs + (1 if j < events % pubs else 0) if events else None

    async def _publish(self, j: int, client: SimClient, start: float, deadline: float) -> None:
        spec, meter = self.spec, self.meter
        quota, rate = self._quota(j), spec.rate / spec.publishers
        if spec.rate > 0:
            # publisher j starts j/R after the first: together they publish one event
            # every 1/R seconds, not all at once every P/R (a burst per tick)
            start += j / spec.rate
        window = asyncio.Semaphore(spec.window)
        pad = "x" * spec.payload
        n = 0
        while (quota is None or n < quota) and time.time() < deadline and not self.ctx.stopping.is_set():
            if rate > 0:
                await self.ctx.sleep_until(start + n / rate)
            try:
                await asyncio.wait_for(window.acquire(), spec.ack_timeout)
            except TimeoutError:
                meter.failed(meter.publish_failures, "ack_timeout", f"window of {spec.window} full for {spec.ack_timeout:g}s")
                return
            channel, sent = spec.channel(j + n * spec.publishers), time.time()
            data = {"t": sent, "p": j, "n": n, "pad": pad}
            try:
                future = await client.send_call("publish", {"channel": channel, "type": "lt", "data": data})
            except ClientFailure as exc:
                meter.failed(meter.publish_failures, exc.reason, exc.detail)
                return
            meter.publish_sent(sent)
            future.add_done_callback(partial(self._acked, channel, sent, window))
            n += 1
        await self._settle(window)

    async def _settle(self, window: asyncio.Semaphore) -> None:
        """Wait (bounded) for this publisher's outstanding acks."""
        acquired = 0
        try:
            async with asyncio.timeout(self.spec.ack_timeout):
                while acquired < self.spec.window:
                    await window.acquire()
                    acquired += 1
        except TimeoutError:
            missing = self.spec.window - acquired
            self.meter.failed(self.meter.publish_failures, "ack_timeout", f"{missing} publishes never acked")

    def _acked(self, channel: str, sent: float, window: asyncio.Semaphore, future: asyncio.Future[Any]) -> None:
        window.release()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            reason = exc.reason if isinstance(exc, ClientFailure) else type(exc).__name__
            self.meter.failed(self.meter.publish_failures, reason, str(exc))
            return
        ack = future.result()
        if not (isinstance(ack, dict) and ack.get("ok")):
            self.meter.failed(self.meter.publish_failures, error_code(ack), str(ack))
            return
        self.meter.publish_acked(sent, time.time())
        seq = ack.get("seq")
        if isinstance(seq, int) and seq > self.acked_heads.get(channel, 0):
            self.acked_heads[channel] = seq

    # -- drain and result ------------------------------------------------------

    def live(self) -> list[Subscriber]:
        return [s for s in self.subscribers if s.tracker is not None and not s.gone
                and s.client is not None and s.client.connected]

    async def drain(self, heads: dict[str, int]) -> None:
        self.heads = heads
        self.ctx.mark("drain_start")
        deadline = time.time() + self.spec.drain_timeout
        live = self.live()
        while time.time() < deadline and not self.ctx.stopping.is_set():
            live = [s for s in live if s.tracker is not None and not s.tracker.caught_up(heads.get(s.channel, 0))]
            if not live:
                break
            await asyncio.sleep(0.05)
        self.ctx.mark("drain_end")

    def result(self) -> Json:
        per_channel: dict[str, Integrity] = defaultdict(Integrity)
        live = set(self.live())
        for sub in live:
            assert sub.tracker is not None
            per_channel[sub.channel].add_tracker(sub.tracker, self.heads.get(sub.channel, 0))
        return {
            "phases": self.ctx.phases,
            "integrity": {ch: i.to_dict() for ch, i in per_channel.items()},
            "dropped": len(self.subscribers) - len(live),
            "strays": self.strays,
        }

    async def close(self) -> None:
        clients = [s.client for s in self.subscribers if s.client is not None] + [c for _, c in self.publishers]
        await self.ctx.close_all(clients)
