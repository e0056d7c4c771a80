"""The server-to-server API (``role: server``) across two instances on PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.clients import call, connect, until
from tests.support.servers import ServerFactory, make_token

SERVER = {"Authorization": f"Bearer {make_token('backend', role='server')}"}


def user(sub: str) -> str:
    return make_token(sub, channels=["chat:*", "news:*"])


async def post(url: str, body: Any, headers: dict[str, str] = SERVER) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def get(url: str, headers: dict[str, str] = SERVER) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def test_batch_publish_to_several_channels_returns_every_seq(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    sub, rec = await connect(b.url, user("alice"))
    for channel in ("chat:a", "news:b", "user:alice"):
        assert (await call(sub, "subscribe", {"channel": channel}))["ok"]
    events = [
        {"channel": "chat:a", "type": "msg", "data": {"n": 1}, "client_msg_id": "m1"},
        {"channel": "news:b", "type": "msg", "data": {"n": 2}},
        {"channel": "chat:a", "type": "msg", "data": {"n": 3}},
        {"channel": "user:alice", "type": "notice", "data": {"n": 4}},
        {"channel": "chat:a", "type": "msg", "data": {"n": 1}, "client_msg_id": "m1"},  # a retry
    ]
    status, body = await post(f"{a.url}/api/v1/server/publish", {"events": events})
    assert status == 200
    results = body["results"]
    assert [(r["ok"], r["channel"], r["seq"], r["duplicate"]) for r in results] == [
        (True, "chat:a", 1, False), (True, "news:b", 1, False), (True, "chat:a", 2, False),
        (True, "user:alice", 1, False), (True, "chat:a", 1, True)]
    assert results[4]["id"] == results[0]["id"]
    await rec.wait_for_seq("chat:a", 2)
    await rec.wait_for_seq("news:b", 1)
    await rec.wait_for_seq("user:alice", 1)
    assert [e["data"]["n"] for e in rec.events["chat:a"]] == [1, 3]  # durable and ordered like any publish

    status, bad = await post(f"{a.url}/api/v1/server/publish",
                             {"events": [{"channel": "chat:a", "type": "t", "data": {}},
                                         {"channel": "Bad Name", "type": "t", "data": {}}]})
    assert (status, bad["code"]) == (400, "invalid_channel") and "events[1]" in bad["detail"]
    status, stats = await get(f"{b.url}/api/v1/server/channels/chat:a/stats")
    assert status == 200 and stats["head"] == 2  # the refused batch stored nothing
    status, denied = await post(f"{a.url}/api/v1/server/publish", {"events": events[:1]},
                                headers={"Authorization": f"Bearer {user('alice')}"})
    assert (status, denied["code"]) == (403, "permission_denied")
    await sub.disconnect()


async def test_disconnect_user_closes_that_users_sockets_on_every_instance(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    alice = [await connect(server.url, user("alice")) for server in (a, a, b)]
    bob, bob_rec = await connect(b.url, user("bob"))
    status, body = await post(f"{b.url}/api/v1/server/users/alice/disconnect", None)
    assert (status, body) == (202, {"user": "alice", "sent": True})
    for client, rec in alice:
        await until(lambda rec=rec: rec.disconnects == 1, what="alice's socket to close")
        assert rec.closing == [{"code": "disconnected_by_server", "message": "disconnected by the application's server"}]
        assert not client.connected
    assert bob.connected and bob_rec.closing == []
    assert (await call(bob, "subscribe", {"channel": "chat:still"}))["ok"]
    status, _ = await post(f"{a.url}/api/v1/server/users/alice/disconnect", None,
                           headers={"Authorization": f"Bearer {user('bob')}"})
    assert status == 403
    await bob.disconnect()


async def test_channel_stats_and_presence_count_subscribers_on_all_instances(
    cluster: ServerFactory, tmp_path: Any
) -> None:
    config = tmp_path / "channels.toml"
    config.write_text("[namespaces.room]\npresence = true\n")
    env = {"SWITCHBOARD_CHANNELS_CONFIG": str(config)}
    a, b = await cluster.start(**env), await cluster.start(**env)
    clients = []
    for server, sub in ((a, "alice"), (a, "alice"), (b, "bob")):
        client, _ = await connect(server.url, make_token(sub, channels=["room:*"]))
        assert (await call(client, "subscribe", {"channel": "room:s"}))["ok"]
        clients.append(client)
    await post(f"{a.url}/api/v1/server/publish", {"events": [{"channel": "room:s", "type": "t", "data": {}}] * 3})
    status, stats = await get(f"{b.url}/api/v1/server/channels/room:s/stats")
    assert status == 200
    assert stats == {"channel": "room:s", "head": 3, "first": 1, "subscribers": 3, "users": 2}
    status, presence = await get(f"{a.url}/api/v1/server/channels/room:s/presence")
    assert status == 200 and [(m["user"], m["connections"]) for m in presence["members"]] == [("alice", 2), ("bob", 1)]
    status, denied = await get(f"{a.url}/api/v1/server/channels/room:s/stats",
                               headers={"Authorization": f"Bearer {user('alice')}"})
    assert (status, denied["code"]) == (403, "permission_denied")
    for client in clients:
        await client.disconnect()
