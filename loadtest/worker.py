"""A worker process: runs its share of a scenario, steered over stdin/stdout.

The coordinator starts ``python -m loadtest.worker`` and talks JSON lines:

    stdin  (commands): {"spec": {...}, "worker": w}   first line, always
                       {"cmd": "go", "start": t, "storm_at": t}
                       {"cmd": "drain", "heads": {channel: seq}}
                       {"cmd": "stop"}                 abort (also: stdin closed)
    stdout (reports):  {"type": "progress", ...}      every PROGRESS_INTERVAL seconds
                       {"type": "ready" | "published" | "result", ...}
                       {"type": "fatal", "error": "..."}

Every phase reply is sent even when the run is being stopped, so the
coordinator never waits on a worker that has given up.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

import aiohttp
import orjson

from .scenarios import WORKER_SCENARIOS, WorkerContext
from .spec import RunSpec

PROGRESS_INTERVAL = 1.0


def _send(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class Commands:
    """Reads commands; ``stop`` (or the coordinator going away) sets ``ctx.stopping``."""

    def __init__(self, reader: asyncio.StreamReader, stopping: asyncio.Event) -> None:
        self._reader = reader
        self._stopping = stopping
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump(self) -> None:
        while True:
            line = await self._reader.readline()
            if not line:
                break
            message = orjson.loads(line)
            if message.get("cmd") == "stop":
                break
            await self._queue.put(message)
        self._stopping.set()
        await self._queue.put({"cmd": "stop"})

    async def expect(self, cmd: str) -> dict[str, Any]:
        if self._stopping.is_set() and self._queue.empty():
            return {"cmd": "stop"}
        message = await self._queue.get()
        if message.get("cmd") != cmd:
            self._stopping.set()
        return message


async def _progress(ctx: WorkerContext) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        _send({"type": "progress", **ctx.meter.snapshot()})


async def serve(spec: RunSpec, worker: int, commands: Commands, ctx: WorkerContext) -> None:
    scenario = WORKER_SCENARIOS[spec.scenario](ctx)
    ticker = asyncio.create_task(_progress(ctx))
    try:
        _send({"type": "ready", **await scenario.setup()})
        go = await commands.expect("go")
        published = await scenario.run(go) if not ctx.stopping.is_set() else {}
        _send({"type": "published", **published})
        drain = await commands.expect("drain")
        await scenario.drain({k: int(v) for k, v in drain.get("heads", {}).items()})
        _send({"type": "progress", **ctx.meter.snapshot()})
        _send({"type": "result", **scenario.result()})
    finally:
        ticker.cancel()
        await scenario.close()
        _send({"type": "progress", **ctx.meter.snapshot()})


async def main_async() -> None:
    reader = await _stdin()
    first = orjson.loads(await reader.readline())
    spec, worker = RunSpec.from_dict(first["spec"]), int(first["worker"])
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        ctx = WorkerContext(spec, worker, session, spec.tokens.build())
        commands = Commands(reader, ctx.stopping)
        pump = asyncio.create_task(commands.pump())
        try:
            await serve(spec, worker, commands, ctx)
        finally:
            pump.cancel()


def main() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        asyncio.run(main_async())
    except Exception as exc:  # one line for the coordinator, the details on stderr
        traceback.print_exc()
        _send({"type": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
