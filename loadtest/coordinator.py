"""Starts the worker processes and steps them through a run's phases in lockstep.

``ready`` (all connected) -> ``go`` (common start time) -> ``published``
(each worker's highest acked seq per channel) -> ``drain`` (the heads: the
highest acked seq per channel over all workers) -> ``result``. Every wait is
bounded; a worker that dies or stalls ends the run with a ``RunFailed`` that
says which worker and why, never a hang.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from .client import ClientFailure, LeanClient
from .results import Aggregator, Json
from .spec import RunSpec

TICK = 1.0
GO_DELAY = 0.5  # seconds between "go" and the common start: every worker hears it in time


class RunFailed(Exception):
    """The run could not go on (preflight refused, a worker died or stalled)."""


class WorkerProcess:
    """One ``python -m loadtest.worker`` child and its JSON-lines conversation."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process, aggregator: Aggregator) -> None:
        self.index = index
        self.proc = proc
        self._aggregator = aggregator
        self._replies: asyncio.Queue[Json] = asyncio.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    async def spawn(cls, spec: RunSpec, index: int, aggregator: Aggregator) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        worker = cls(index, proc, aggregator)
        await worker.send({"spec": spec.to_dict(), "worker": index})
        return worker

    async def send(self, message: Json) -> None:
        assert self.proc.stdin is not None
        if self.proc.stdin.is_closing():
            return
        self.proc.stdin.write(orjson.dumps(message) + b"\n")
        try:
            await self.proc.stdin.drain()
        except ConnectionError:
            pass

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            message = orjson.loads(line)
            if message.get("type") == "progress":
                self._aggregator.progress(self.index, message)
            else:
                await self._replies.put(message)
        await self._replies.put({"type": "exited"})

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def expect(self, kind: str, timeout: float) -> Json:
        """The next reply, which must be ``kind``; ``RunFailed`` on death, ``fatal`` or timeout."""
        try:
            reply = await asyncio.wait_for(self._replies.get(), timeout)
        except TimeoutError:
            raise RunFailed(f"worker {self.index} sent no '{kind}' within {timeout:.0f}s") from None
        if reply.get("type") != kind:
            detail = reply.get("error") or (self.stderr[-1] if self.stderr else f"exit {self.proc.returncode}")
            raise RunFailed(f"worker {self.index} failed before '{kind}': {detail}")
        return reply

    async def finish(self, timeout: float = 30) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def preflight(spec: RunSpec) -> None:
    """Connect once to every URL with the first token: a bad setup fails here, clearly."""
    tokens = spec.tokens.build()
    failures = []
    for url in spec.urls:
        client = LeanClient()
        try:
            await client.connect(url, tokens.token(0), min(spec.connect_timeout, 10))
        except ClientFailure as exc:
            failures.append(f"{url}: {exc.reason}" + (f" ({exc.detail})" if exc.detail else ""))
            continue
        await client.close()
    if failures:
        raise RunFailed("cannot connect: " + "; ".join(failures))


class Coordinator:
    """Runs one ``RunSpec`` over ``spec.procs`` workers; ``on_tick`` sees every timeline row."""

    def __init__(self, spec: RunSpec, on_tick: Callable[[Aggregator], None] | None = None) -> None:
        self.spec = spec
        self.aggregator = Aggregator(spec)
        self._on_tick = on_tick
        self.workers: list[WorkerProcess] = []

    async def run(self) -> Json:
        ticker = asyncio.create_task(self._tick())
        try:
            self.workers = [await WorkerProcess.spawn(self.spec, w, self.aggregator) for w in range(self.spec.procs)]
            result = await self._phases()
        finally:
            await self._stop()
            ticker.cancel()
        self.aggregator.tick()
        return result

    def _bounds(self) -> dict[str, float]:
        spec = self.spec
        ramp = (spec.clients + spec.publishers) / spec.ramp if spec.ramp else 0.0
        prefill = spec.rest_prefill * spec.channels / 200 if spec.scenario == "rest" else 0.0
        return {"ready": 60 + 2 * ramp + spec.connect_timeout + prefill,
                "published": spec.duration + 2 * spec.ack_timeout + 30,
                "result": spec.drain_timeout + 60}

    async def _phases(self) -> Json:
        bounds = self._bounds()
        self.aggregator.phase = "connecting"
        await asyncio.gather(*(w.expect("ready", bounds["ready"]) for w in self.workers))
        start = time.time() + GO_DELAY
        self.aggregator.phase = "running"
        await self._broadcast({"cmd": "go", "start": start, "storm_at": start + self.spec.duration * 0.3})
        published = await asyncio.gather(*(w.expect("published", bounds["published"]) for w in self.workers))
        heads: dict[str, int] = {}
        for reply in published:
            for channel, seq in reply.get("acked_heads", {}).items():
                heads[channel] = max(heads.get(channel, 0), int(seq))
        self.aggregator.phase = "draining"
        await self._broadcast({"cmd": "drain", "heads": heads})
        results = await asyncio.gather(*(w.expect("result", bounds["result"]) for w in self.workers))
        self.aggregator.phase = "closing"
        await asyncio.gather(*(w.finish() for w in self.workers))
        self.aggregator.phase = "done"
        return self.aggregator.final(dict(enumerate(results)), heads)

    async def _broadcast(self, message: dict[str, Any]) -> None:
        await asyncio.gather(*(w.send(message) for w in self.workers))

    async def _stop(self) -> None:
        """Tell every worker still running to stop, and wait for it (bounded) to close its clients."""
        await self._broadcast({"cmd": "stop"})
        await asyncio.gather(*(w.finish() for w in self.workers), return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.aggregator.tick()
            if self._on_tick is not None:
                self._on_tick(self.aggregator)
