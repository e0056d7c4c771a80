"""Promise 5 on a real server (embedded defaults): authentication, authorization, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from tests.support.clients import call, connect, new_client
from tests.support.servers import ServerFactory, ServerProcess, make_token
from tests.support.waiting import LOADED


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("security")
    factory = ServerFactory(tmp, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp / 'sb.db'}",
                                  "SWITCHBOARD_REDIS_URL": "memory://",
                                  "SWITCHBOARD_MAX_PAYLOAD_BYTES": "2048"})
    yield factory.start_sync()
    factory.stop_all()


def alice() -> str:
    return make_token("alice", channels=["chat:*"])


async def refusal(url: str, token: str | None, **kwargs: Any) -> Any:
    client, rec = new_client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, auth={"token": token} if token else None, transports=["websocket"],
                             wait_timeout=LOADED, **kwargs)
    assert rec.connect_errors, "no connect_error received"
    return rec.connect_errors[0]


def none_alg_token() -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "channels": ["*"]}, None, algorithm="none")


async def test_refused_tokens_get_their_code(server: ServerProcess) -> None:
    cases = {
        "missing_token": None,
        "token_expired": make_token("alice", ttl=-60),
        "invalid_token": make_token("alice", secret="not-the-server-secret-0123456789"),
    }
    for code, tok in cases.items():
        data = await refusal(server.url, tok)
        assert data["code"] == code, data
        assert data["message"]
    assert (await refusal(server.url, none_alg_token()))["code"] == "invalid_token"
    assert (await refusal(server.url, "garbage.token"))["code"] == "invalid_token"


async def test_token_accepted_from_header_and_query(server: ServerProcess) -> None:
    by_header, _ = new_client()
    await by_header.connect(server.url, headers={"Authorization": f"Bearer {alice()}"}, transports=["websocket"])
    by_query, _ = new_client()
    await by_query.connect(f"{server.url}?token={alice()}", transports=["websocket"])
    for client in (by_header, by_query):
        assert (await call(client, "subscribe", {"channel": "chat:1"}))["ok"]
        await client.disconnect()


async def test_authorization_per_channel(server: ServerProcess) -> None:
    client, _ = await connect(server.url, alice())
    denied = [
        ("subscribe", {"channel": "news:1"}),
        ("subscribe", {"channel": "user:bob"}),
        ("publish", {"channel": "news:1", "type": "t", "data": {}}),
        ("publish", {"channel": "user:alice", "type": "t", "data": {}}),  # users only read their channel
        ("history", {"channel": "user:bob"}),
    ]
    for event, payload in denied:
        ack = await call(client, event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "permission_denied", (event, payload, ack)
    assert (await call(client, "subscribe", {"channel": "user:alice"}))["ok"]
    await client.disconnect()


async def test_server_role_publishes_to_a_user_channel(server: ServerProcess) -> None:
    user, rec = await connect(server.url, make_token("bob"))
    assert (await call(user, "subscribe", {"channel": "user:bob"}))["ok"]
    backend, _ = await connect(server.url, make_token("backend", role="server"))
    ack = await call(backend, "publish", {"channel": "user:bob", "type": "notice", "data": {"x": 1}})
    assert ack["ok"]
    await rec.wait_for_seq("user:bob", ack["seq"])
    await user.disconnect()
    await backend.disconnect()


MALFORMED: list[tuple[str, tuple[Any, ...], str]] = [
    ("publish", ({"channel": "chat:1", "type": "t", "data": "not an object"},), "bad_request"),
    ("publish", ({"channel": "chat:1", "type": "t", "data": [1, 2]},), "bad_request"),
    ("publish", ({"channel": "chat:1", "data": {}},), "bad_request"),
    ("publish", ({"channel": "chat:1", "type": 5, "data": {}},), "bad_request"),
    ("publish", ({"channel": "chat:1", "type": "t", "data": {}, "extra": 1},), "bad_request"),
    ("publish", ({"channel": "chat:1", "type": "t", "data": {}}, "extra positional"), "bad_request"),
    ("publish", ("just a string",), "bad_request"),
    ("publish", ({"channel": "chat:1", "type": "t", "data": {"blob": "x" * 4000}},), "payload_too_large"),
    ("publish", ({"channel": "Chat 1", "type": "t", "data": {}},), "invalid_channel"),
    ("subscribe", ({"channel": 42},), "bad_request"),
    ("subscribe", ({"channel": "chat:1", "since": -1},), "bad_request"),
    ("subscribe", ({"channel": "chat:1", "since": "5"},), "bad_request"),
    ("subscribe", ({"channel": "chat:1", "since": 2**64},), "bad_request"),
    ("history", ({"channel": "chat:1", "after": 2**70},), "bad_request"),
    ("subscribe", ({"channel": "nocolon"},), "invalid_channel"),
    ("subscribe", ({"channel": "chat:" + "x" * 300},), "invalid_channel"),
    ("unsubscribe", ({"channel": "chat:never"},), "not_subscribed"),
    ("history", ({"channel": "chat:1", "limit": 0},), "bad_request"),
    ("no_such_event", ({},), "bad_request"),
]


async def test_malformed_calls_get_error_acks_and_the_connection_keeps_working(server: ServerProcess) -> None:
    client, _rec = await connect(server.url, alice())
    bystander, brec = await connect(server.url, alice())
    assert (await call(bystander, "subscribe", {"channel": "chat:calm"}))["ok"]
    for event, args, code in MALFORMED:
        ack = await client.call(event, args if len(args) > 1 else args[0], timeout=LOADED)
        assert ack["ok"] is False and ack["error"]["code"] == code, (event, args, ack)
        assert ack["error"]["message"]
    # no arguments at all
    ack = await client.call("subscribe", timeout=LOADED)
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
    assert client.connected
    ok = await call(client, "publish", {"channel": "chat:calm", "type": "t", "data": {"fine": True}})
    assert ok["ok"]
    await brec.wait_for_seq("chat:calm", ok["seq"])
    await client.disconnect()
    await bystander.disconnect()


async def test_garbage_packets_on_the_wire_do_not_drop_the_connection(server: ServerProcess) -> None:
    """Speak Engine.IO 4 / Socket.IO 5 by hand to send what no client library would."""
    bystander, brec = await connect(server.url, alice())
    await call(bystander, "subscribe", {"channel": "chat:wire"})
    async with raw_socket(server) as ws:
        for garbage in ['42["publish", {broken', "4Z", '42{"not":"a list"}', "42[123]", '43["x"]', "42[]", "4"]:
            await ws.send_str(garbage)
        await ws.send_str('421["publish",{"channel":"chat:wire","type":"t","data":{"after":"garbage"}}]')
        reply = await _next_message(ws, "431")
        ack = json.loads(reply[3:])[0]
        assert ack["ok"] is True
    await brec.wait_for_seq("chat:wire", ack["seq"])
    assert brec.events["chat:wire"][-1]["data"] == {"after": "garbage"}
    # a frame that is not even Engine.IO (no packet type, or one that does not exist)
    # closes that transport (as Node's engine.io does: a parse error), no other
    for frame in ("", "9"):
        async with raw_socket(server, join=False) as ws:
            await ws.send_str(frame)
            closed = await asyncio.wait_for(ws.receive(), LOADED)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), frame
    still = await call(bystander, "publish", {"channel": "chat:wire", "type": "t", "data": {}})
    assert still["ok"] and bystander.connected
    await bystander.disconnect()


@contextlib.asynccontextmanager
async def raw_socket(server: ServerProcess, *, join: bool = True) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A hand-driven Engine.IO 4 websocket, connected to namespace ``/`` unless ``join=False``."""
    ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        assert (await ws.receive_str()).startswith("0")  # engine.io open
        if join:
            await ws.send_str("40" + json.dumps({"token": alice()}))
            assert (await ws.receive_str()).startswith("40")  # namespace connected
        yield ws


async def _next_message(ws: aiohttp.ClientWebSocketResponse, prefix: str) -> str:
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":
                await ws.send_str("3")
            elif msg.data.startswith(prefix):
                return str(msg.data)


async def test_rest_requires_a_valid_token_and_answers_problem_json(server: ServerProcess) -> None:
    url = f"{server.url}/api/v1/channels/chat:1/events"
    async with aiohttp.ClientSession() as http:
        for headers, code in [({}, "missing_token"),
                              ({"Authorization": "Bearer nope"}, "invalid_token"),
                              ({"Authorization": f"Bearer {make_token('a', ttl=-60)}"}, "token_expired")]:
            async with http.get(url, headers=headers) as r:
                assert r.status == 401 and r.content_type == "application/problem+json"
                assert (await r.json())["code"] == code
        auth = {"Authorization": f"Bearer {alice()}"}
        checks = [
            ("get", f"{server.url}/api/v1/channels/news:1/events", None, 403, "permission_denied"),
            ("get", f"{server.url}/api/v1/channels/bad name/events", None, 400, "invalid_channel"),
            ("get", url + "?limit=abc", None, 400, "bad_request"),
            ("post", url, b"{not json", 400, "bad_request"),
            ("post", url, json.dumps({"type": "t", "data": "str"}).encode(), 400, "bad_request"),
            ("post", url, json.dumps({"type": "t", "data": {"b": "x" * 4000}}).encode(), 413, "payload_too_large"),
            ("post", url, b"x" * 200_000, 413, "payload_too_large"),
            ("post", f"{server.url}/api/v1/sync", json.dumps({"channels": {"user:bob": 0}}).encode(), 403,
             "permission_denied"),
            ("get", f"{server.url}/api/v1/nowhere", None, 404, "not_found"),
        ]
        for method, target, body, status, code in checks:
            async with http.request(method, target, data=body, headers=auth) as r:
                problem = await r.json(content_type=None)
                assert (r.status, problem.get("code")) == (status, code), (method, target, problem)
                assert r.content_type == "application/problem+json"


async def test_health_and_readiness(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200
        async with http.get(server.url + "/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["checks"] == {"store": "ok", "broker": "ok"}


async def test_embedded_defaults_serve_end_to_end(embedded: ServerFactory, tmp_path: Path) -> None:
    server = await embedded.start()
    sub, rec = await connect(server.url, alice())
    await call(sub, "subscribe", {"channel": "chat:emb"})
    pub, _ = await connect(server.url, alice())
    acks = [await call(pub, "publish", {"channel": "chat:emb", "type": "t", "data": {"i": i}}) for i in range(20)]
    assert [a["seq"] for a in acks] == list(range(1, 21))
    await rec.wait_for_seq("chat:emb", 20)
    assert rec.seqs("chat:emb") == list(range(1, 21))
    await sub.disconnect()
    await pub.disconnect()
    assert (tmp_path / "sb.db").exists()


async def test_pipelined_publishes_from_one_connection_commit_in_emit_order(server: ServerProcess) -> None:
    client, _ = await connect(server.url, alice())
    acks: dict[int, int] = {}
    done = asyncio.Event()

    def ack_for(i: int) -> Any:
        def on_ack(ack: dict[str, Any]) -> None:
            acks[i] = ack["seq"]
            if len(acks) == 300:
                done.set()
        return on_ack

    for i in range(300):  # no waiting between emits: the server sees them back to back
        await client.emit("publish", {"channel": "chat:pipe", "type": "t", "data": {"i": i}}, callback=ack_for(i))
    await asyncio.wait_for(done.wait(), LOADED)
    seqs = [acks[i] for i in range(300)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 300
    await client.disconnect()


async def test_publishes_without_an_ack_and_over_long_polling_are_stored_in_order(server: ServerProcess) -> None:
    # websocket publishes take the inline path (server/inline.py); an ack-less one and
    # a long-polling client's go other ways, and all of them must land in emit order
    watcher, wrec = await connect(server.url, alice())
    await call(watcher, "subscribe", {"channel": "chat:ways"})
    async with raw_socket(server) as ws:
        await ws.send_str('42["publish",{"channel":"chat:ways","type":"t","data":{"n":1}}]')  # no ack wanted
        await ws.send_str('427["publish",{"channel":"chat:ways","type":"t","data":{"n":2}}]')
        ack = json.loads((await _next_message(ws, "437"))[3:])[0]
        assert ack["ok"] is True and ack["seq"] == 2
        await ws.send_str('428["publish",{"channel":"chat:ways","type":"t"}]')  # no data: refused, same id
        refused = json.loads((await _next_message(ws, "438"))[3:])[0]
        assert refused["ok"] is False and refused["error"]["code"] == "bad_request"
    poller, _ = new_client()
    await poller.connect(server.url, auth={"token": alice()}, transports=["polling"], wait_timeout=10)
    assert poller.transport() == "polling"
    polled = await call(poller, "publish", {"channel": "chat:ways", "type": "t", "data": {"n": 3}})
    assert polled["ok"] is True and polled["seq"] == 3
    await wrec.wait_for_seq("chat:ways", 3)
    assert [e["data"]["n"] for e in wrec.events["chat:ways"]] == [1, 2, 3]
    await poller.disconnect()
    await watcher.disconnect()


async def test_a_message_over_the_transport_limit_closes_only_that_connection(server: ServerProcess) -> None:
    bystander, brec = await connect(server.url, alice())
    await call(bystander, "subscribe", {"channel": "chat:big"})
    async with raw_socket(server) as ws:
        huge = {"channel": "chat:big", "type": "t", "data": {"blob": "x" * 40_000}}  # cap: 2048 + 16 KiB
        await ws.send_str("421" + json.dumps(["publish", huge]))
        closed = await asyncio.wait_for(ws.receive(), LOADED)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    ok = await call(bystander, "publish", {"channel": "chat:big", "type": "t", "data": {"small": 1}})
    assert ok["ok"] and ok["seq"] == 1  # the oversized one was never stored
    await brec.wait_for_seq("chat:big", 1)
    await bystander.disconnect()
