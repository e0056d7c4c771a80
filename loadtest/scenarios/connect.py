"""``connect``: ramp to N connections at a given rate, hold them, let them go.

Measures the connect rate actually achieved, connect latency (websocket open
to Socket.IO CONNECT accepted, token verification included), failures by
reason, the time until all were connected, and connections the server dropped
while they were held.
"""

from __future__ import annotations

from ..client import SimClient
from .base import Json, WorkerContext, WorkerScenario


class ConnectScenario(WorkerScenario):
    """Opens this worker's share of ``--clients`` connections and holds them for ``--duration``."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.clients: list[SimClient] = []

    async def setup(self) -> Json:
        self.ctx.mark("ramp_start")
        await self.ctx.ramp(self.spec.owned(self.spec.clients, self.ctx.worker), self._open)
        self.ctx.mark("ramp_end")
        return {"connected": self.meter.connected}

    async def _open(self, index: int) -> None:
        client = await self.ctx.open_client(index)
        if client is not None:
            self.clients.append(client)

    async def run(self, go: Json) -> Json:
        self.ctx.mark("hold_start")
        await self.ctx.sleep_until(float(go["start"]) + self.spec.duration)
        self.ctx.mark("hold_end")
        return {}

    def result(self) -> Json:
        return {"phases": self.ctx.phases, "held": self.meter.connected}

    async def close(self) -> None:
        await self.ctx.close_all(self.clients)
        self.clients.clear()
