"""Presence across two real instances on PostgreSQL and Redis (the issue's proofs).

``room:`` has presence on; ``chat:`` has it off. Instances use a 3 s presence
timeout, so a killed instance's members must be gone (and ``leave`` sent) within 3 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.support.clients import Recorder, call, connect, until
from tests.support.servers import ServerFactory, make_token
from tests.support.waiting import eventually

TIMEOUT = 3.0
ROOM = "room:1"


@pytest.fixture
def presence_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "channels.toml"
    config.write_text("[namespaces.room]\npresence = true\n")
    return {"SWITCHBOARD_CHANNELS_CONFIG": str(config), "SWITCHBOARD_PRESENCE_TIMEOUT": str(TIMEOUT)}


def token(sub: str, **info: Any) -> str:
    return make_token(sub, channels=["room:*", "chat:*"], info=info) if info else make_token(sub, channels=["room:*", "chat:*"])


def changes(rec: Recorder, user: str) -> list[str]:
    return [p["action"] for p in rec.presence if p["user"] == user and p["channel"] == ROOM]


async def rest_presence(url: str, channel: str, sub: str = "watcher") -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/v1/channels/{channel}/presence",
                            headers={"Authorization": f"Bearer {token(sub)}"}) as r:
            return r.status, await r.json()


async def test_join_and_leave_cross_instances_and_three_devices_count_once(
    cluster: ServerFactory, presence_env: dict[str, str]
) -> None:
    a, b = await cluster.start(**presence_env), await cluster.start(**presence_env)
    watcher, seen = await connect(b.url, token("watcher"))
    assert (await call(watcher, "subscribe", {"channel": ROOM}))["ok"]
    devices: list[socketio.AsyncClient] = []
    for server in (a, a, b):  # alice's phone, tablet and laptop
        client, _ = await connect(server.url, token("alice", name="Alice"))
        assert (await call(client, "subscribe", {"channel": ROOM}))["ok"]
        devices.append(client)
    await until(lambda: changes(seen, "alice") == ["join"], what="alice's join on the other instance")

    ack = await call(devices[0], "presence", {"channel": ROOM})
    assert ack == {"ok": True, "channel": ROOM, "members": [
        {"user": "alice", "connections": 3, "info": {"name": "Alice"}},
        {"user": "watcher", "connections": 1, "info": {}}]}
    status, body = await rest_presence(b.url, ROOM)
    assert status == 200 and body == {"channel": ROOM, "members": ack["members"]}

    await devices[0].disconnect()
    await devices[2].disconnect()
    async def one_left() -> bool:  # the servers process the disconnects asynchronously
        return await connections_of(devices[1], "alice") == 1

    await eventually(one_left, what="alice down to one connection")
    assert changes(seen, "alice") == ["join"]  # still there: no leave yet
    await devices[1].disconnect()
    await until(lambda: changes(seen, "alice") == ["join", "leave"], what="alice's leave")
    assert [m["user"] for m in (await call(watcher, "presence", {"channel": ROOM}))["members"]] == ["watcher"]
    await watcher.disconnect()


async def connections_of(client: socketio.AsyncClient, user: str) -> int:
    ack = await call(client, "presence", {"channel": ROOM})
    return next((m["connections"] for m in ack["members"] if m["user"] == user), 0)


async def test_presence_needs_the_namespace_option_and_read_access(
    cluster: ServerFactory, presence_env: dict[str, str]
) -> None:
    server = await cluster.start(**presence_env)
    client, _ = await connect(server.url, token("alice"))
    off = await call(client, "presence", {"channel": "chat:1"})
    assert off["ok"] is False and off["error"]["code"] == "bad_request"
    denied = await call(client, "presence", {"channel": "secret:1"})
    assert denied["ok"] is False and denied["error"]["code"] == "permission_denied"
    status, body = await rest_presence(server.url, "user:bob", sub="alice")
    assert (status, body["code"]) == (403, "permission_denied")
    await client.disconnect()


async def test_a_killed_instance_members_leave_within_the_timeout(
    cluster: ServerFactory, presence_env: dict[str, str]
) -> None:
    a, b = await cluster.start(**presence_env), await cluster.start(**presence_env)
    watcher, seen = await connect(b.url, token("watcher"))
    await call(watcher, "subscribe", {"channel": ROOM})
    for sub in ("bob", "carol"):
        client, _ = await connect(a.url, token(sub))
        await call(client, "subscribe", {"channel": ROOM})
    await until(lambda: changes(seen, "bob") == ["join"] and changes(seen, "carol") == ["join"], what="joins")

    a.kill()  # SIGKILL: no cleanup of any kind
    killed = time.monotonic()
    await until(lambda: changes(seen, "bob") == ["join", "leave"] and changes(seen, "carol") == ["join", "leave"],
                timeout=2 * TIMEOUT, what="leaves of the killed instance's members")
    elapsed = time.monotonic() - killed
    print(f"members left {elapsed:.2f}s after SIGKILL")
    assert elapsed <= TIMEOUT + 0.5, f"members left {elapsed:.2f}s after the kill (bound {TIMEOUT}s)"
    status, body = await rest_presence(b.url, ROOM)
    assert status == 200 and [m["user"] for m in body["members"]] == ["watcher"]
    await watcher.disconnect()
