"""What every scenario's worker side shares: the run, the meter, and opening clients at a paced rate.

A scenario runs in each worker process in four phases the coordinator steps
through in lockstep (so the workers' ramps finish before anyone publishes):

    setup()  -> "ready"      connect (and subscribe) this worker's clients
    run(go)  -> "published"  hold / publish / churn / request until the deadline
    drain(heads)             wait until subscribers have every seq up to the heads
    result() -> "result"     what only the end of the run knows (integrity, phases)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import aiohttp

from ..client import ClientFailure, EventHandler, LeanClient, SimClient
from ..meter import Meter
from ..spec import RunSpec
from ..tokens import TokenSource

Json = dict[str, Any]


class WorkerContext:
    """The run as one worker sees it: its index, the shared HTTP session, tokens and meter."""

    def __init__(self, spec: RunSpec, worker: int, session: aiohttp.ClientSession, tokens: TokenSource) -> None:
        self.spec = spec
        self.worker = worker
        self.session = session
        self.tokens = tokens
        self.meter = Meter()
        self.stopping = asyncio.Event()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """Record when a phase happened (wall clock), for the timeline and the report."""
        self.phases[phase] = time.time()

    def new_client(self) -> SimClient:
        if self.spec.client == "sio":
            from ..sioclient import SioClient

            return SioClient(self.session)
        return LeanClient()

    async def open_client(self, index: int, on_event: EventHandler | None = None) -> SimClient | None:
        """Connect simulated client ``index``; ``None`` (and the reason counted) when it fails."""
        client = self.new_client()
        client.on_event = on_event
        client.on_close = self._closed_by_server
        started = time.time()
        try:
            await client.connect(self.spec.url(index), self.tokens.token(index), self.spec.connect_timeout)
        except ClientFailure as exc:
            self.meter.failed(self.meter.connect_failures, exc.reason, exc.detail)
            return None
        self.meter.connects += 1
        self.meter.connected += 1
        self.meter.peak_connected = max(self.meter.peak_connected, self.meter.connected)
        self.meter.histograms["connect"].record(time.time() - started)
        return client

    def _closed_by_server(self, reason: str) -> None:
        self.meter.connected -= 1
        self.meter.disconnects[reason] += 1

    async def close_client(self, client: SimClient) -> None:
        """Disconnect on purpose (not counted as a disconnect)."""
        was_connected = client.connected
        client.on_close = None
        await client.close()
        if was_connected:
            self.meter.connected -= 1

    async def close_all(self, clients: Iterable[SimClient], batch: int = 500) -> None:
        """Close many clients, ``batch`` at a time, so the server sees a steady stream of leaves."""
        pending = list(clients)
        for start in range(0, len(pending), batch):
            await asyncio.gather(*(self.close_client(c) for c in pending[start:start + batch]),
                                 return_exceptions=True)

    async def ramp(self, indices: Iterable[int], attempt: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        """Run ``attempt(i)`` for each index at this worker's share of ``--ramp`` per second,
        with at most its share of ``--connect-concurrency`` in flight."""
        rate = self.spec.share(self.spec.ramp)
        slots = asyncio.Semaphore(max(1, round(self.spec.share(self.spec.connect_concurrency))))
        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for n, index in enumerate(indices):
            if self.stopping.is_set():
                break
            if rate > 0:
                delay = begin + n / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(attempt(index))
            task.add_done_callback(lambda _: slots.release())
            tasks.append(task)
        await asyncio.gather(*tasks)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the wall-clock ``deadline`` or until the run is stopped."""
        remaining = deadline - time.time()
        if remaining > 0:
            try:
                await asyncio.wait_for(self.stopping.wait(), remaining)
            except TimeoutError:
                pass


class WorkerScenario:
    """The worker side of a scenario; see the module docstring for the phases."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.meter = ctx.meter

    async def setup(self) -> Json:
        return {}

    async def run(self, go: Json) -> Json:
        return {}

    async def drain(self, heads: dict[str, int]) -> None:
        return None

    def result(self) -> Json:
        return {}

    async def close(self) -> None:
        return None
