"""Promises 1-4 across two real server processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import socketio

from tests.support.clients import Recorder, call, connect, publish_many
from tests.support.servers import ServerFactory, make_token
from tests.support.waiting import eventually

CHANNEL = "chat:order"
EVENTS = 2000
PUBLISHERS = 4


def token(sub: str = "alice") -> str:
    return make_token(sub, channels=["chat:*"])


async def test_every_subscriber_gets_every_seq_once_in_order_across_instances(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    subscribers: list[tuple[socketio.AsyncClient, Recorder]] = []
    epochs = set()
    for server in (a, b, a, b):
        client, rec = await connect(server.url, token())
        ack = await call(client, "subscribe", {"channel": CHANNEL})
        assert ack == {"ok": True, "channel": CHANNEL, "head": 0, "recovered": True, "epoch": ack["epoch"]}
        epochs.add(ack["epoch"])
        subscribers.append((client, rec))
    assert len(epochs) == 1 and "" not in epochs  # both instances answer the one new history's epoch
    publishers = [(await connect(server.url, token(f"pub{i}")))[0] for i, server in enumerate((a, b, a, b))]

    per = EVENTS // PUBLISHERS
    acked = await asyncio.gather(*(publish_many(p, CHANNEL, per, f"p{i}") for i, p in enumerate(publishers)))

    assert sorted(s for seqs in acked for s in seqs) == list(range(1, EVENTS + 1))
    for seqs in acked:  # one connection's publishes commit in the order it sent them
        assert seqs == sorted(seqs)
    for _client, rec in subscribers:
        await rec.wait_for_seq(CHANNEL, EVENTS)
        assert rec.seqs(CHANNEL) == list(range(1, EVENTS + 1))
    for client in [c for c, _ in subscribers] + publishers:
        await client.disconnect()


async def test_reconnect_with_since_gets_exactly_the_missed_events_then_live(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    publisher, _ = await connect(a.url, token("pub"))
    sub, rec = await connect(b.url, token())
    await call(sub, "subscribe", {"channel": CHANNEL})
    await publish_many(publisher, CHANNEL, 30, "first")
    await rec.wait_for_seq(CHANNEL, 30)
    await sub.disconnect()

    await publish_many(publisher, CHANNEL, 25, "missed")
    streaming = asyncio.create_task(publish_many(publisher, CHANNEL, 40, "during"))
    sub2, _ = await connect(a.url, token(), recorder=rec)  # back on the other instance
    ack = await call(sub2, "subscribe", {"channel": CHANNEL, "since": 30})
    assert ack["ok"] and ack["recovered"] is True and ack["head"] >= 55
    await streaming
    await publish_many(publisher, CHANNEL, 5, "after")
    await rec.wait_for_seq(CHANNEL, 100)
    assert rec.seqs(CHANNEL) == list(range(1, 101))
    await sub2.disconnect()
    await publisher.disconnect()


async def test_publish_retry_with_same_client_msg_id_stores_once(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    first, _ = await connect(a.url, token())
    second, _ = await connect(b.url, token())
    msg = {"channel": CHANNEL, "type": "msg", "data": {"text": "hi"}, "client_msg_id": "m-1"}
    one = await call(first, "publish", msg)
    again = await call(second, "publish", msg)  # the retry after a reconnect lands on another instance
    assert one["ok"] and one["duplicate"] is False
    assert again == {"ok": True, "seq": one["seq"], "id": one["id"], "duplicate": True}
    history = await call(first, "history", {"channel": CHANNEL})
    assert [e["client_msg_id"] for e in history["events"]] == ["m-1"]
    await first.disconnect()
    await second.disconnect()


async def test_rest_history_and_sync_match_what_the_socket_delivered(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    sub, rec = await connect(a.url, token())
    await call(sub, "subscribe", {"channel": CHANNEL})
    publisher, _ = await connect(b.url, token("pub"))
    await publish_many(publisher, CHANNEL, 12, "x")
    await rec.wait_for_seq(CHANNEL, 12)
    headers = {"Authorization": f"Bearer {token()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{b.url}/api/v1/channels/{CHANNEL}/events", params={"after": "0", "limit": "5"}) as r:
            page = await r.json()
        assert r.status == 200 and page["head"] == 12 and page["next_after"] == 5
        async with http.get(f"{b.url}/api/v1/channels/{CHANNEL}/events", params={"after": "5", "limit": "100"}) as r:
            rest = await r.json()
        assert rest["next_after"] is None
        assert page["events"] + rest["events"] == rec.events[CHANNEL]
        async with http.post(f"{a.url}/api/v1/sync", json={"channels": {CHANNEL: 7, "chat:empty": 0}}) as r:
            synced = await r.json()
        assert r.status == 200
        assert synced["channels"][CHANNEL]["events"] == rec.events[CHANNEL][7:]
        assert synced["channels"][CHANNEL]["recovered"] is True
        assert synced["channels"]["chat:empty"] == {"events": [], "head": 0, "recovered": True, "has_more": False,
                                                    "epoch": ""}
    await sub.disconnect()
    await publisher.disconnect()


async def test_rest_publish_reaches_socket_subscribers_on_other_instance(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    sub, rec = await connect(a.url, token())
    await call(sub, "subscribe", {"channel": CHANNEL})
    headers = {"Authorization": f"Bearer {token('pub')}", "Idempotency-Key": "rest-1"}
    async with aiohttp.ClientSession() as http:
        body = {"type": "msg", "data": {"via": "rest"}}
        async with http.post(f"{b.url}/api/v1/channels/{CHANNEL}/events", json=body, headers=headers) as r:
            created = await r.json()
            assert r.status == 201 and created["duplicate"] is False
        async with http.post(f"{b.url}/api/v1/channels/{CHANNEL}/events", json=body, headers=headers) as r:
            assert r.status == 200 and await r.json() == {**created, "duplicate": True}
    await rec.wait_for_seq(CHANNEL, created["seq"])
    assert [e["data"] for e in rec.events[CHANNEL]] == [{"via": "rest"}]
    await sub.disconnect()


async def test_subscribers_miss_nothing_when_an_instance_loses_its_redis_connection(
    cluster: ServerFactory, redis_url: str
) -> None:
    import uuid

    import redis.asyncio as aioredis

    name = f"sbtest-{uuid.uuid4().hex[:8]}"
    a = await cluster.start()
    b = await cluster.start(SWITCHBOARD_REDIS_URL=f"{redis_url}?client_name={name}")
    sub, rec = await connect(b.url, token())
    await call(sub, "subscribe", {"channel": CHANNEL})
    publisher, _ = await connect(a.url, token("pub"))
    admin = aioredis.Redis.from_url(redis_url)
    kills = 0
    published: list[int] = []

    async def connections_of_b() -> list[str]:
        """b's connections, once its pub/sub connection is among them (it is back)."""
        if not any(c.get("name") == name for c in await admin.client_list(_type="pubsub")):
            return []
        return [c["id"] for c in await admin.client_list() if c.get("name") == name]

    async def kill_b_connections() -> None:
        """Cut b's Redis connections three times while the publisher runs, each time once
        b has reconnected and some events have gone by (not on a timer)."""
        nonlocal kills
        for _ in range(3):
            since = len(published)
            await eventually(lambda since=since: len(published) >= since + 20, what="publishes between cuts")
            for client_id in await eventually(connections_of_b, what="b's Redis connections to be back"):
                await admin.execute_command("CLIENT", "KILL", "ID", client_id)
            kills += 1

    async def publish_while_killing() -> None:
        i = 0
        while i < 300 or not killer.done():
            ack = await call(publisher, "publish", {"channel": CHANNEL, "type": "msg", "data": {"from": "x", "i": i}})
            assert ack["ok"], ack
            published.append(ack["seq"])
            i += 1

    killer = asyncio.create_task(kill_b_connections())
    await publish_while_killing()
    await killer
    await admin.aclose()
    assert kills == 3
    head = published[-1]
    await rec.wait_for_seq(CHANNEL, head)
    assert rec.seqs(CHANNEL) == list(range(1, head + 1))
    await sub.disconnect()
    await publisher.disconnect()
