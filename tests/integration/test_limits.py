"""Each limit triggers its error code at its threshold and not before; the connection
survives where the limit says it should. Real instances on PostgreSQL and Redis.

The instances trust ``X-Forwarded-For``, so each test can be its own client IP.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.support.clients import call, connect, new_client
from tests.support.servers import ServerFactory, ServerProcess, make_token
from tests.support.waiting import LOADED, eventually

PAYLOAD_CAP = 2048  # SWITCHBOARD_MAX_PAYLOAD_BYTES: the transport cap is this + 16 KiB
TRANSPORT_CAP = PAYLOAD_CAP + 16 * 1024


@pytest.fixture
def limits_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "channels.toml"
    config.write_text("[namespaces.small]\nmax_payload_bytes = 100\n")
    return {
        "SWITCHBOARD_CHANNELS_CONFIG": str(config),
        "SWITCHBOARD_MAX_PAYLOAD_BYTES": str(PAYLOAD_CAP),
        "SWITCHBOARD_TRUST_FORWARDED_FOR": "true",
        "SWITCHBOARD_LIMIT_PUBLISH_RATE": "2",
        "SWITCHBOARD_LIMIT_PUBLISH_BURST": "5",
        "SWITCHBOARD_LIMIT_CONNECT_RATE": "0.5",
        "SWITCHBOARD_LIMIT_CONNECT_BURST": "3",
        "SWITCHBOARD_LIMIT_CONNECTIONS_PER_USER": "2",
        "SWITCHBOARD_LIMIT_SUBSCRIPTIONS": "3",
        "SWITCHBOARD_LIMIT_REST_RATE": "1",
        "SWITCHBOARD_LIMIT_REST_BURST": "4",
    }


# A rate test sends the burst and one more and expects the one more refused, which
# holds only while the burst goes by faster than one token refills. Rates stay low
# enough that a loaded machine has seconds for that, and retry_after is checked
# against the time the burst actually took.


def token(sub: str = "alice") -> str:
    return make_token(sub, channels=["chat:*", "small:*"])


async def connect_from(server: ServerProcess, ip: str, tok: str) -> tuple[socketio.AsyncClient, Any]:
    return await connect(server.url, tok, headers={"X-Forwarded-For": ip})


async def refused(server: ServerProcess, ip: str, tok: str) -> Any:
    client, rec = new_client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, auth={"token": tok}, headers={"X-Forwarded-For": ip},
                             transports=["websocket"], wait_timeout=LOADED)
    assert rec.connect_errors, "no connect_error received"
    return rec.connect_errors[0]


async def test_publish_rate_allows_the_burst_then_rate_limits_with_retry_after(
    cluster: ServerFactory, limits_env: dict[str, str]
) -> None:
    rate = 0.5  # a token every 2 s
    server = await cluster.start(**{**limits_env, "SWITCHBOARD_LIMIT_PUBLISH_RATE": str(rate)})
    client, _ = await connect_from(server, "10.0.0.1", token())
    msg = {"channel": "chat:rate", "type": "t", "data": {}}
    started = time.monotonic()
    acks = [await call(client, "publish", msg) for _ in range(6)]
    took = time.monotonic() - started
    assert took < 1 / rate, f"the burst took {took:.2f}s: too slow to tell a refill from a limit"
    assert [a["ok"] for a in acks] == [True] * 5 + [False]
    error = acks[5]["error"]
    assert error["code"] == "rate_limited" and 1 / rate - took <= error["retry_after"] <= 1 / rate
    # Waiting the advertised time is the behaviour under test; waiting longer cannot fail it.
    await asyncio.sleep(error["retry_after"])
    assert (await call(client, "publish", msg))["ok"]  # the connection survived
    backend, _ = await connect_from(server, "10.0.0.1", make_token("backend", role="server"))
    assert all([(await call(backend, "publish", msg))["ok"] for _ in range(10)])  # server tokens: no rate limit
    for c in (client, backend):
        await c.disconnect()


async def test_payload_size_per_namespace(cluster: ServerFactory, limits_env: dict[str, str]) -> None:
    server = await cluster.start(**limits_env)
    client, _ = await connect_from(server, "10.0.0.2", token())
    at_limit = {"b": "x" * 92}  # {"b":"x...x"} is exactly 100 bytes of JSON
    assert len(json.dumps(at_limit, separators=(",", ":"))) == 100
    ok = await call(client, "publish", {"channel": "small:1", "type": "t", "data": at_limit})
    over = await call(client, "publish", {"channel": "small:1", "type": "t", "data": {"b": "x" * 93}})
    assert ok["ok"] is True
    assert over["ok"] is False and over["error"]["code"] == "payload_too_large"
    elsewhere = await call(client, "publish", {"channel": "chat:1", "type": "t", "data": {"b": "x" * 1000}})
    assert elsewhere["ok"] is True  # other namespaces keep the global cap
    await client.disconnect()


async def test_transport_max_message_size_closes_only_beyond_it(cluster: ServerFactory, limits_env: dict[str, str]) -> None:
    server = await cluster.start(**limits_env)
    ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"

    def frame(size: int) -> str:
        head = '421["publish",{"channel":"chat:big","type":"t","data":{"b":"'
        tail = '"}}]'
        return head + "x" * (size - len(head) - len(tail)) + tail

    async with aiohttp.ClientSession(headers={"X-Forwarded-For": "10.0.0.3"}) as http:
        # aiohttp refuses a WebSocket message of max_msg_size bytes or more (engineio's own
        # check is "more than"): over WebSocket the largest message is the cap minus one
        for size, survives in ((TRANSPORT_CAP - 1, True), (TRANSPORT_CAP, False)):
            async with http.ws_connect(ws_url) as ws:
                await ws.receive_str()
                await ws.send_str("40" + json.dumps({"token": token()}))
                await ws.receive_str()
                await ws.send_str(frame(size))
                reply = await asyncio.wait_for(ws.receive(), 5)
                if survives:  # within the transport cap: an ack (the payload itself is too large)
                    assert reply.type == aiohttp.WSMsgType.TEXT and reply.data.startswith("431"), reply
                    assert json.loads(reply.data[3:])[0]["error"]["code"] == "payload_too_large"
                else:
                    assert reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), reply


async def test_new_connections_per_ip(cluster: ServerFactory, limits_env: dict[str, str]) -> None:
    rate = 0.2  # a new connection every 5 s
    server = await cluster.start(**{**limits_env, "SWITCHBOARD_LIMIT_CONNECT_RATE": str(rate)})
    clients = [(await connect_from(server, "10.0.1.1", token(f"u{i}")))[0] for i in range(3)]
    error = await refused(server, "10.0.1.1", token("u3"))
    assert error["code"] == "too_many_connections" and 0 < error["retry_after"] <= 1 / rate
    other_ip, _ = await connect_from(server, "10.0.1.2", token("u4"))  # another address is not affected
    for c in [*clients, other_ip]:
        assert c.connected
        await c.disconnect()


async def test_concurrent_connections_per_user_across_instances(
    cluster: ServerFactory, limits_env: dict[str, str]
) -> None:
    a, b = await cluster.start(**limits_env), await cluster.start(**limits_env)
    first, _ = await connect_from(a, "10.0.2.1", token("alice"))
    second, _ = await connect_from(b, "10.0.2.2", token("alice"))
    error = await refused(a, "10.0.2.3", token("alice"))
    assert error["code"] == "too_many_connections"
    bob, _ = await connect_from(a, "10.0.2.3", token("bob"))  # other users are not affected
    await second.disconnect()
    attempts = iter(range(4, 255))

    async def third_connects() -> socketio.AsyncClient | None:
        # the instance uncounts the closed connection asynchronously; each attempt comes
        # from a new address so that the per-IP connect rate does not slow the retries
        try:
            return (await connect_from(a, f"10.0.2.{next(attempts)}", token("alice")))[0]
        except socketio.exceptions.ConnectionError:
            return None

    third = await eventually(third_connects, what="alice's closed connection to be uncounted")
    assert third is not None and third.connected
    backends = [(await connect_from(b, "10.0.2.5", make_token("backend", role="server")))[0] for _ in range(3)]
    for c in [first, third, bob, *backends]:
        await c.disconnect()


async def test_subscriptions_per_connection(cluster: ServerFactory, limits_env: dict[str, str]) -> None:
    server = await cluster.start(**limits_env)
    client, _ = await connect_from(server, "10.0.3.1", token())
    acks = [await call(client, "subscribe", {"channel": f"chat:{i}"}) for i in range(4)]
    assert [a["ok"] for a in acks] == [True, True, True, False]
    assert acks[3]["error"]["code"] == "too_many_subscriptions"
    assert (await call(client, "subscribe", {"channel": "chat:0", "since": 0}))["ok"]  # already counted
    assert (await call(client, "unsubscribe", {"channel": "chat:1"}))["ok"]
    assert (await call(client, "subscribe", {"channel": "chat:3"}))["ok"]
    await client.disconnect()


async def test_rest_requests_per_token(cluster: ServerFactory, limits_env: dict[str, str]) -> None:
    rate = 0.5  # a request every 2 s
    server = await cluster.start(**{**limits_env, "SWITCHBOARD_LIMIT_REST_RATE": str(rate)})
    url = f"{server.url}/api/v1/channels/chat:1/events"
    async with aiohttp.ClientSession() as http:
        alice = {"Authorization": f"Bearer {token()}"}
        statuses = []
        started = time.monotonic()
        for _ in range(5):
            async with http.get(url, headers=alice) as r:
                statuses.append(r.status)
                last = (r.headers.get("Retry-After"), await r.json(content_type=None))
        took = time.monotonic() - started
        assert took < 1 / rate, f"the burst took {took:.2f}s: too slow to tell a refill from a limit"
        assert statuses == [200, 200, 200, 200, 429]
        retry_after, problem = last
        assert problem["code"] == "rate_limited" and 1 / rate - took <= problem["retry_after"] <= 1 / rate
        assert retry_after == str(math.ceil(problem["retry_after"]))  # whole seconds, rounded up
        async with http.get(url, headers={"Authorization": f"Bearer {token('bob')}"}) as r:
            assert r.status == 200  # per token
        backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
        for _ in range(10):
            async with http.get(url, headers=backend) as r:
                assert r.status == 200
        await asyncio.sleep(problem["retry_after"])  # the advertised wait: longer cannot fail it
        async with http.get(url, headers=alice) as r:
            assert r.status == 200
