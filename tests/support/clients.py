"""A real Socket.IO client (python-socketio ``AsyncClient``) that records what it receives."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import socketio

from tests.support.waiting import LOADED, elapsed_until, eventually


@dataclass
class Recorder:
    """Everything one client received, by kind."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    connect_errors: list[Any] = field(default_factory=list)
    disconnects: int = 0
    presence: list[dict[str, Any]] = field(default_factory=list)
    closing: list[dict[str, Any]] = field(default_factory=list)
    expiring: list[dict[str, Any]] = field(default_factory=list)

    def seqs(self, channel: str) -> list[int]:
        return [e["seq"] for e in self.events[channel]]

    async def wait_for_seq(self, channel: str, seq: int, timeout: float = LOADED) -> None:
        def reached() -> bool:
            got = self.events[channel]
            assert got and got[-1]["seq"] >= seq, f"last is {got[-1]['seq'] if got else None} ({len(got)} events)"
            return True

        await eventually(reached, timeout, f"{channel} to reach seq {seq}")


async def until(check: Any, timeout: float = LOADED, what: str = "condition") -> float:
    """Poll ``check()`` until true; the seconds it took (AssertionError after ``timeout``)."""
    return await elapsed_until(check, timeout, what)


def new_client(recorder: Recorder | None = None) -> tuple[socketio.AsyncClient, Recorder]:
    rec = recorder or Recorder()
    client = socketio.AsyncClient(reconnection=False)

    @client.on("event")
    async def on_event(data: dict[str, Any]) -> None:
        rec.events[data["channel"]].append(data)

    @client.on("connect_error")
    async def on_connect_error(data: Any) -> None:
        rec.connect_errors.append(data)

    @client.on("disconnect")
    async def on_disconnect(*_: Any) -> None:
        rec.disconnects += 1

    @client.on("presence")
    async def on_presence(data: dict[str, Any]) -> None:
        rec.presence.append(data)

    @client.on("closing")
    async def on_closing(data: dict[str, Any]) -> None:
        rec.closing.append(data)

    @client.on("expiring")
    async def on_expiring(data: dict[str, Any]) -> None:
        rec.expiring.append(data)

    return client, rec


async def connect(url: str, token: str | None, recorder: Recorder | None = None, **kwargs: Any) -> tuple[socketio.AsyncClient, Recorder]:
    client, rec = new_client(recorder)
    auth = {"token": token} if token is not None else None
    await client.connect(url, auth=auth, transports=["websocket"], wait_timeout=LOADED, **kwargs)
    return client, rec


async def call(client: socketio.AsyncClient, event: str, *args: Any, timeout: float = LOADED) -> Any:
    """Emit with an ack and return the ack payload."""
    return await client.call(event, args[0] if len(args) == 1 else args, timeout=timeout) if args else await client.call(event, timeout=timeout)


async def publish_many(client: socketio.AsyncClient, channel: str, count: int, tag: str) -> list[int]:
    """Publish ``count`` events one after another (``data: {from: tag, i}``); their seqs."""
    seqs = []
    for i in range(count):
        ack = await call(client, "publish", {"channel": channel, "type": "msg", "data": {"from": tag, "i": i}})
        assert ack["ok"], ack
        seqs.append(ack["seq"])
    return seqs
