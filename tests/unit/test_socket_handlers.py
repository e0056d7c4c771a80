"""The Socket.IO handlers in process: every call gets its ack, refusals carry their code.

``SocketHandlers`` registers on a fake server that only records handlers; calls go
straight to them as python-socketio would dispatch them. Behind it, the real
domain on SQLite and the memory broker, with a recording transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from channels.broker.memory import MemoryHub
from channels.errors import AppError, ErrorCode
from channels.limits import Limits
from channels.models import JsonObject, Principal
from channels.presence.memory import MemoryPresenceHub
from handlers.connections import Connections
from handlers.expiry import ExpiryClock
from handlers.sockets import Refused, SocketHandlers
from tests.support.inprocess import Instance, until

CH = "chat:room"
TOKENS = {
    "alice": Principal("alice", channels=("chat:*",)),
    "bob": Principal("bob", channels=("chat:*",)),
    "mallory": Principal("mallory", channels=("other:*",)),
}
Handler = Callable[..., Awaitable[Any]]


class RecordingServer:
    """Stands in for ``socketio.AsyncServer``: ``register`` only calls ``on``."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def on(self, event: str, handler: Handler) -> None:
        self.handlers[event] = handler


class RecordingControl:
    def __init__(self) -> None:
        self.notified: list[tuple[str, str, JsonObject]] = []
        self.closed: list[tuple[str, str]] = []

    async def notify(self, conn_id: str, event: str, data: JsonObject) -> None:
        self.notified.append((conn_id, event, data))

    async def close(self, conn_id: str, reason: AppError) -> None:
        self.closed.append((conn_id, reason.code.value))


def authenticate(auth: object, environ: Mapping[str, Any]) -> Principal:
    token = auth.get("token") if isinstance(auth, dict) else None
    if token not in TOKENS:
        raise AppError(ErrorCode.INVALID_TOKEN, "unknown token")
    return TOKENS[str(token)]


def verify(token: str | None) -> Principal:
    return authenticate({"token": token}, {})


class Harness:
    def __init__(self, instance: Instance, limits: Limits) -> None:
        self.instance = instance
        self.control = RecordingControl()
        registry = Connections(instance.service, authenticate, self.control, limits=limits,
                               client_ip=lambda environ: "127.0.0.1", expiry=ExpiryClock(lead=30, grace=5))
        self.sockets = SocketHandlers(instance.service, registry, verify)
        self.server = RecordingServer()
        self.sockets.register(self.server)  # type: ignore[arg-type]

    async def connect(self, sid: str, token: str) -> None:
        await self.server.handlers["connect"](sid, {}, {"token": token})

    async def call(self, sid: str, event: str, *args: object) -> dict[str, Any]:
        ack: dict[str, Any] = await self.server.handlers[event](sid, *args)
        return ack

    def received(self, sid: str) -> list[int]:
        return self.instance.delivery.received[sid]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    instance = Instance(tmp_path / "events.db", MemoryHub(), MemoryPresenceHub())
    await instance.start()
    yield Harness(instance, Limits(publish_rate=1000, publish_burst=1000, subscriptions_per_connection=2))
    await instance.close()


async def test_subscribe_publish_and_receive_in_order_with_acks(harness: Harness) -> None:
    await harness.connect("s1", "alice")
    await harness.connect("s2", "bob")
    joined = await harness.call("s2", "subscribe", {"channel": CH})
    assert joined == {"ok": True, "channel": CH, "head": 0, "recovered": True, "epoch": joined["epoch"]}
    assert len(joined["epoch"]) == 12
    acks = [await harness.call("s1", "publish", {"channel": CH, "type": "msg", "data": {"i": i}}) for i in range(5)]
    assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5] and all(a["ok"] and not a["duplicate"] for a in acks)
    await until(lambda: len(harness.received("s2")) >= 5)
    assert harness.received("s2") == [1, 2, 3, 4, 5]
    history = await harness.call("s1", "history", {"channel": CH, "after": 2, "limit": 2})
    assert [e["seq"] for e in history["events"]] == [3, 4] and history["next_after"] == 4


async def test_a_retried_publish_is_acked_with_the_original_seq(harness: Harness) -> None:
    await harness.connect("s1", "alice")
    msg = {"channel": CH, "type": "msg", "data": {}, "client_msg_id": "m-1"}
    first, again = await harness.call("s1", "publish", msg), await harness.call("s1", "publish", msg)
    assert (first["seq"], first["duplicate"]) == (1, False)
    assert (again["seq"], again["duplicate"], again["id"]) == (1, True, first["id"])


async def test_resubscribe_with_since_is_acked_after_the_replay(harness: Harness) -> None:
    await harness.connect("s1", "alice")
    for i in range(8):
        await harness.call("s1", "publish", {"channel": CH, "type": "msg", "data": {"i": i}})
    await harness.connect("s2", "bob")
    ack = await harness.call("s2", "subscribe", {"channel": CH, "since": 5})
    assert (ack["ok"], ack["head"], ack["recovered"]) == (True, 8, True)
    assert harness.received("s2") == [6, 7, 8]  # replayed before the ack


async def test_refusals_are_acks_with_codes_and_the_connection_survives(harness: Harness) -> None:
    await harness.connect("m1", "mallory")
    await harness.connect("s1", "alice")
    cases: list[tuple[str, str, tuple[object, ...], str]] = [
        ("m1", "subscribe", ({"channel": CH},), "permission_denied"),
        ("m1", "publish", ({"channel": CH, "type": "msg", "data": {}},), "permission_denied"),
        ("m1", "history", ({"channel": CH},), "permission_denied"),
        ("s1", "subscribe", ({"channel": "user:bob"},), "permission_denied"),
        ("s1", "subscribe", ({"channel": "nonamespace"},), "invalid_channel"),
        ("s1", "subscribe", ({"channel": CH, "since": -1},), "bad_request"),
        ("s1", "publish", ({"channel": CH, "type": "msg", "data": "not an object"},), "bad_request"),
        ("s1", "publish", ({"channel": CH, "type": "msg", "data": {"x": "y" * 70_000}},), "payload_too_large"),
        ("s1", "subscribe", (), "bad_request"),
        ("s1", "subscribe", ("chat:room",), "bad_request"),
        ("s1", "unsubscribe", ({"channel": CH},), "not_subscribed"),
    ]
    for sid, event, args, code in cases:
        ack = await harness.call(sid, event, *args)
        assert ack["ok"] is False and ack["error"]["code"] == code, (event, args, ack)
    unknown = await harness.server.handlers["*"]("bogus", "s1", {})
    assert unknown["error"]["code"] == "bad_request"
    assert (await harness.instance.store.bounds(CH)).head == 0
    assert (await harness.call("s1", "subscribe", {"channel": CH}))["ok"]  # still connected and served


async def test_the_subscription_limit_is_refused_per_connection(harness: Harness) -> None:
    await harness.connect("s1", "alice")
    for name in ("chat:a", "chat:b"):
        assert (await harness.call("s1", "subscribe", {"channel": name}))["ok"]
    ack = await harness.call("s1", "subscribe", {"channel": "chat:c"})
    assert ack["error"]["code"] == "too_many_subscriptions"
    assert (await harness.call("s1", "subscribe", {"channel": "chat:a"}))["ok"]  # resubscribing is no new one


async def test_a_bad_token_is_refused_at_connect_and_a_departure_leaves_its_channels(harness: Harness) -> None:
    with pytest.raises(Refused) as refused:
        await harness.connect("x1", "forged")
    assert refused.value.error_args["code"] == "invalid_token"
    await harness.connect("s1", "alice")
    await harness.call("s1", "subscribe", {"channel": CH})
    assert harness.instance.fanout.members(CH) == 1
    await harness.server.handlers["disconnect"]("s1", "client disconnect")
    assert harness.instance.fanout.members(CH) == 0 and harness.instance.fanout.live_channels() == 0
    ack = await harness.call("s1", "publish", {"channel": CH, "type": "msg", "data": {}})
    assert ack["error"]["code"] == "unavailable"  # a call racing the departure is answered, not dropped


async def test_calls_other_than_publish_are_rate_limited_per_connection(tmp_path: Path) -> None:
    instance = Instance(tmp_path / "events.db", MemoryHub(), MemoryPresenceHub())
    await instance.start()
    try:
        harness = Harness(instance, Limits(call_rate=0.001, call_burst=5, subscriptions_per_connection=0))
        await harness.connect("s1", "alice")
        await harness.connect("s2", "bob")
        codes = [(await harness.call("s1", "subscribe", {"channel": f"chat:c{i}"})).get("error", {}).get("code")
                 for i in range(8)]
        assert codes == [None] * 5 + ["rate_limited"] * 3  # a subscribe loop is cut at the burst
        refused = await harness.call("s1", "history", {"channel": CH})
        assert refused["error"]["code"] == "rate_limited" and refused["error"]["retry_after"] > 0
        assert (await harness.call("s1", "publish", {"channel": CH, "type": "m", "data": {}}))["ok"]  # own bucket
        assert (await harness.call("s2", "subscribe", {"channel": CH}))["ok"]  # another connection: its own
        assert instance.fanout.live_channels() == 6
    finally:
        await instance.close()


async def test_bad_event_names_are_logged_once_per_connection_and_kept_short(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.connect("s1", "alice")
    caplog.set_level("INFO", logger="handlers.sockets")
    for i in range(20):
        ack = await harness.server.handlers["*"]("x" * 10_000 + str(i), "s1", {})
        assert ack["error"]["code"] == "bad_request" and len(ack["error"]["message"]) < 100
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and len(lines[0]) < 200, lines
