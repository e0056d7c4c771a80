"""Issue 10 (hostile clients) on real instances (PostgreSQL + Redis): calls that a
client library would never send, spoken by hand, and races between calls.

``room:`` has presence on. Rate limits are off unless a test sets them.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.support.clients import call, connect, new_client
from tests.support.rawsocket import RawSocket
from tests.support.servers import ServerFactory, ServerProcess, make_token

ROOM = "room:reserved"


@pytest.fixture
def rooms_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "channels.toml"
    config.write_text("[namespaces.room]\npresence = true\n")
    return {"SWITCHBOARD_CHANNELS_CONFIG": str(config)}


def token(sub: str = "alice", channels: list[str] | None = None, **kwargs: Any) -> str:
    return make_token(sub, channels=channels if channels is not None else ["room:*", "chat:*"], **kwargs)


async def server_get(server: ServerProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
        async with http.get(f"{server.url}/api/v1/server{path}", headers=headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def raw_call(sock: RawSocket, frame_body: list[Any], timeout: float = 10) -> Any:
    """Send ``frame_body`` as an EVENT with an ack id, whatever its name; the ack."""
    sock._ack += 1
    ack_id = sock._ack
    await sock.ws.send_str(f"42{ack_id}" + json.dumps(frame_body))
    async with asyncio.timeout(timeout):
        while True:
            frame = await sock._next()
            if frame.startswith(f"43{ack_id}["):
                return json.loads(frame[len(f"43{ack_id}"):])


async def read_until(sock: RawSocket, found: Any, timeout: float = 15) -> None:
    """Read frames until an event for which ``found(event)`` holds has been received."""
    async with asyncio.timeout(timeout):
        while not any(found(e) for e in sock.events):
            await sock._next()


def refused(ack: Any) -> bool:
    return (isinstance(ack, list) and len(ack) == 1 and ack[0]["ok"] is False
            and ack[0]["error"]["code"] == "bad_request")


# -- 1. reserved event names --------------------------------------------------------


async def test_reserved_event_names_are_refused_and_never_re_run_connect_or_disconnect(
    cluster: ServerFactory, rooms_env: dict[str, str]
) -> None:
    server = await cluster.start(**rooms_env)
    watcher, _ = await connect(server.url, token("watcher"))
    sock = await RawSocket.connect(server.url, token("alice"))
    assert (await sock.call("subscribe", {"channel": ROOM}))["ok"]
    hostile = [
        ["connect", {}, {"token": token("alice")}],
        ["connect", {}, {"token": token("mallory", channels=["room:*"])}],
        ["disconnect", "x"],
        ["disconnect"],
        ["connect_error", {"message": "x"}],
        ["*", {}],
        [],
        [7, {}],
    ]
    for body in hostile:
        ack = await raw_call(sock, body)
        assert refused(ack), (body, ack)
    # still the same connection, still alice, still subscribed
    ack = await sock.call("publish", {"channel": ROOM, "type": "t", "data": {"n": 1}})
    assert ack["ok"], ack
    await read_until(sock, lambda e: e[0] == "event" and e[1]["seq"] == ack["seq"])
    assert [e[1]["sender"] for e in sock.events if e[0] == "event"] == ["alice"]
    members = (await call(watcher, "presence", {"channel": ROOM}))["members"]
    assert [(m["user"], m["connections"]) for m in members] == [("alice", 1)]
    await sock.close()

    async def gone() -> bool:
        stats = await server_get(server, f"/channels/{ROOM}/stats")
        present = (await call(watcher, "presence", {"channel": ROOM}))["members"]
        return stats["subscribers"] == 0 and present == []

    await until_async(gone, what="the closed connection's subscription and presence gone")
    await watcher.disconnect()


async def test_a_disconnect_event_does_not_free_a_slot_of_the_per_user_limit(cluster: ServerFactory) -> None:
    server = await cluster.start(SWITCHBOARD_LIMIT_CONNECTIONS_PER_USER="2")
    socks = [await RawSocket.connect(server.url, token("alice")) for _ in range(2)]
    for sock in socks:
        assert refused(await raw_call(sock, ["disconnect", "transport close"]))
    client, rec = new_client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, auth={"token": token("alice")}, transports=["websocket"], wait_timeout=5)
    assert rec.connect_errors and rec.connect_errors[0]["code"] == "too_many_connections", rec.connect_errors
    for sock in socks:
        await sock.close()


async def until_async(check: Any, timeout: float = 15, what: str = "condition") -> None:
    """``until`` for a coroutine check."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


# -- 4. subscribe racing a narrowing refresh ---------------------------------------------


async def send_together(sock: RawSocket, calls: list[tuple[str, Any]]) -> list[tuple[Any, int]]:
    """Emit ``calls`` back to back (one write each, no waiting between them); for each,
    its ack and how many events the socket had received when the ack came."""
    first = sock._ack + 1
    for event, data in calls:
        sock._ack += 1
        await sock.ws.send_str(f"42{sock._ack}" + json.dumps([event, data]))
    acks: dict[int, tuple[Any, int]] = {}
    async with asyncio.timeout(15):
        while len(acks) < len(calls):
            frame = await sock._next()
            for ack_id in range(first, first + len(calls)):
                if frame.startswith(f"43{ack_id}["):
                    acks[ack_id] = (json.loads(frame[len(f"43{ack_id}"):])[0], len(sock.events))
    return [acks[i] for i in range(first, first + len(calls))]


async def test_a_subscribe_racing_a_narrowing_refresh_does_not_keep_the_revoked_channel(
    cluster: ServerFactory, rooms_env: dict[str, str]
) -> None:
    server = await cluster.start(**rooms_env)
    publisher, _ = await connect(server.url, make_token("backend", role="server"))
    sock = await RawSocket.connect(server.url, token("alice"))
    assert (await sock.call("subscribe", {"channel": "room:marker"}))["ok"]
    narrow = token("alice", channels=["room:*"])
    for attempt in range(10):
        channel = f"chat:race{attempt}"
        (sub_ack, _), (refresh_ack, seen_at_refresh) = await send_together(
            sock, [("subscribe", {"channel": channel}), ("refresh", {"token": narrow})])
        assert refresh_ack["ok"], refresh_ack
        if sub_ack["ok"]:  # decided on the old token: the refresh must take it away again
            assert refresh_ack["unsubscribed"] == [channel], (attempt, sub_ack, refresh_ack)
        else:
            assert sub_ack["error"]["code"] == "permission_denied", sub_ack
        assert (await call(publisher, "publish", {"channel": channel, "type": "t", "data": {}}))["ok"]
        marker = await call(publisher, "publish", {"channel": "room:marker", "type": "t", "data": {"i": attempt}})
        marker_seq = marker["seq"]
        await read_until(sock, lambda e, seq=marker_seq: e[0] == "event" and e[1]["channel"] == "room:marker"
                         and e[1]["seq"] == seq)
        late = [e for e in sock.events[seen_at_refresh:] if e[0] == "event" and e[1]["channel"] == channel]
        assert late == [], (attempt, late)
        # back to the wide token for the next try
        assert (await sock.call("refresh", {"token": token("alice")}))["ok"]
    await sock.close()
    await publisher.disconnect()


# -- 5. the REST rate limit's key ---------------------------------------------------------


async def test_the_rest_rate_limit_counts_a_token_whatever_the_header_spelling(cluster: ServerFactory) -> None:
    server = await cluster.start(SWITCHBOARD_LIMIT_REST_RATE="0.1", SWITCHBOARD_LIMIT_REST_BURST="4")
    tok = token("alice")
    spellings = [f"Bearer {tok}", f"Bearer  {tok}", f"bEaReR {tok}", f"BEARER {tok}", f"bearer {tok} ",
                 f"Bearer   {tok}  "]
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        for spelling in spellings * 3:
            async with http.get(f"{server.url}/api/v1/channels/chat:1/events",
                                headers={"Authorization": spelling}) as r:
                statuses.append(r.status)
    assert set(statuses) == {200, 429}
    assert statuses.count(200) <= 5, statuses  # the burst of one token (and a refill at most)


# -- 8 and 11. names with a trailing newline, dates as strings --------------------------------


async def test_a_trailing_newline_names_no_channel_and_a_string_exp_is_an_invalid_token(
    cluster: ServerFactory,
) -> None:
    server = await cluster.start()
    client, _ = await connect(server.url, token("alice"))
    for call_name, payload in [("subscribe", {"channel": "chat:x\n"}),
                               ("publish", {"channel": "chat:x\n", "type": "t", "data": {}})]:
        ack = await call(client, call_name, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_channel", ack
    ack = await call(client, "publish", {"channel": "chat:x", "type": "t", "data": {}, "client_msg_id": "m\n"})
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
    await client.disconnect()
    stringly = make_token("alice", channels=["chat:*"], exp=str(int(time.time()) + 3600))
    refused_client, rec = new_client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused_client.connect(server.url, auth={"token": stringly}, transports=["websocket"], wait_timeout=5)
    assert rec.connect_errors and rec.connect_errors[0]["code"] == "invalid_token", rec.connect_errors
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/v1/channels/chat:1/events",
                                                         headers={"Authorization": f"Bearer {stringly}"}) as r:
        assert r.status == 401 and (await r.json())["code"] == "invalid_token"


# -- 7b. data nested too deep ------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


async def test_data_nested_too_deep_is_a_bad_request_naming_the_event_and_the_deepest_allowed_travels(
    cluster: ServerFactory,
) -> None:
    server = await cluster.start()
    watcher, seen = await connect(server.url, token("watcher"))
    assert (await call(watcher, "subscribe", {"channel": "chat:deep"}))["ok"]
    client, _ = await connect(server.url, token("alice"))
    ack = await call(client, "publish", {"channel": "chat:deep", "type": "t", "data": nested(300)})
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request" and "deeper" in ack["error"]["message"], ack
    deepest = await call(client, "publish", {"channel": "chat:deep", "type": "t", "data": nested(100)})
    assert deepest["ok"] and deepest["seq"] == 1, deepest
    await seen.wait_for_seq("chat:deep", 1)
    assert seen.events["chat:deep"][0]["data"] == nested(100)
    async with aiohttp.ClientSession() as http:
        alice = {"Authorization": f"Bearer {token('alice')}"}
        url = f"{server.url}/api/v1/channels/chat:deep/events"
        async with http.post(url, json={"type": "t", "data": nested(300)}, headers=alice) as r:
            problem = await r.json(content_type=None)
            assert (r.status, problem["code"]) == (400, "bad_request") and "deeper" in problem["detail"], problem
        async with http.get(url, headers=alice) as r:
            page = await r.json()
            assert r.status == 200 and [e["data"] for e in page["events"]] == [nested(100)]
        backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
        batch = {"events": [{"channel": "chat:deep", "type": "t", "data": {}},
                            {"channel": "chat:deep", "type": "t", "data": nested(260)}]}
        async with http.post(f"{server.url}/api/v1/server/publish", json=batch, headers=backend) as r:
            problem = await r.json(content_type=None)
            assert (r.status, problem["code"]) == (400, "bad_request"), problem
            assert problem["detail"].startswith("events[1]: data nests deeper"), problem
    assert (await call(client, "history", {"channel": "chat:deep"}))["head"] == 1  # nothing of the refused stored
    await client.disconnect()
    await watcher.disconnect()
