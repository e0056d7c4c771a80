"""``rest``: REST sync and history pages at a given concurrency.

Worker 0 first publishes ``--rest-prefill`` events into each of the K
channels (``POST /api/v1/channels/{c}/events``). Then ``--rest-concurrency``
request loops (split over the workers) alternate ``POST /api/v1/sync`` for
five random channels at random positions and ``GET .../events?after=&limit=100``
history pages, for ``--duration`` seconds. Every page is checked: its seqs
must run contiguously from the position asked for (``bad_pages`` otherwise).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp

from ..client import reason_of
from .base import Json, WorkerContext, WorkerScenario

SYNC_CHANNELS = 5
PAGE = 100


class RestScenario(WorkerScenario):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.bad_pages = 0

    def _headers(self, index: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ctx.tokens.token(index)}"}

    async def setup(self) -> Json:
        if self.ctx.worker == 0 and self.spec.rest_prefill:
            self.ctx.mark("prefill_start")
            await self._prefill()
            self.ctx.mark("prefill_end")
        return {}

    async def _prefill(self) -> None:
        jobs = [(k, n) for n in range(self.spec.rest_prefill) for k in range(self.spec.channels)]
        slots = asyncio.Semaphore(self.spec.rest_concurrency)

        async def post(k: int, n: int) -> None:
            async with slots:
                url = f"{self.spec.url(k)}/api/v1/channels/{self.spec.channel(k)}/events"
                body = {"type": "prefill", "data": {"n": n}}
                await self._request("POST", url, k, measure=False, json=body)

        await asyncio.gather(*(post(k, n) for k, n in jobs))

    async def _request(self, method: str, url: str, index: int, measure: bool = True, **kwargs: Any) -> Any:
        """One request, counted by status (or failure reason); the JSON body when it is a 2xx.

        Prefill requests (``measure=False``) count only their failures."""
        started = time.time()
        try:
            async with self.ctx.session.request(method, url, headers=self._headers(index),
                                                timeout=aiohttp.ClientTimeout(total=self.spec.ack_timeout),
                                                **kwargs) as resp:
                body = await resp.json(content_type=None) if resp.status < 300 else await resp.read()
                status = str(resp.status)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.meter.failed(self.meter.statuses, reason_of(exc), str(exc))
            return None
        if status.startswith("2"):
            if measure:
                self.meter.requests += 1
                self.meter.histograms["rest"].record(time.time() - started)
                self.meter.statuses[status] += 1
            return body
        self.meter.failed(self.meter.statuses, status, body.decode(errors="replace")[:200])
        return None

    async def run(self, go: Json) -> Json:
        start = float(go["start"])
        await self.ctx.sleep_until(start)
        self.ctx.mark("requests_start")
        deadline = start + self.spec.duration
        loops = self.spec.owned(self.spec.rest_concurrency, self.ctx.worker)
        await asyncio.gather(*(self._loop(i, deadline) for i in loops))
        self.ctx.mark("requests_end")
        return {}

    async def _loop(self, index: int, deadline: float) -> None:
        rng = random.Random(index)
        n = 0
        while time.time() < deadline and not self.ctx.stopping.is_set():
            if n % 2 == 0:
                await self._sync(index, rng)
            else:
                await self._history(index, rng)
            n += 1

    def _check(self, events: Any, after: int) -> None:
        seqs = [e.get("seq") for e in events] if isinstance(events, list) else None
        if seqs != list(range(after + 1, after + 1 + len(seqs or []))):
            self.bad_pages += 1

    async def _sync(self, index: int, rng: random.Random) -> None:
        picks = {self.spec.channel(rng.randrange(self.spec.channels)): rng.randint(0, self.spec.rest_prefill)
                 for _ in range(SYNC_CHANNELS)}
        body = await self._request("POST", f"{self.spec.url(index)}/api/v1/sync", index, json={"channels": picks})
        if isinstance(body, dict) and isinstance(body.get("channels"), dict):
            for name, after in picks.items():
                self._check(body["channels"].get(name, {}).get("events"), after)

    async def _history(self, index: int, rng: random.Random) -> None:
        channel = self.spec.channel(rng.randrange(self.spec.channels))
        after = rng.randint(0, self.spec.rest_prefill)
        url = f"{self.spec.url(index)}/api/v1/channels/{channel}/events"
        body = await self._request("GET", url, index, params={"after": str(after), "limit": str(PAGE)})
        if isinstance(body, dict):
            self._check(body.get("events"), after)

    def result(self) -> Json:
        return {"phases": self.ctx.phases, "bad_pages": self.bad_pages}
