"""Token lifecycle without reconnecting, on a real instance (PostgreSQL + Redis).

The instance warns 2 s before a token expires and closes 1 s after; tokens live 3 s.
"""

from __future__ import annotations

import asyncio
import time

import jwt

from tests.support.clients import call, connect, until
from tests.support.servers import ServerFactory, make_token

ENV = {"SWITCHBOARD_TOKEN_EXPIRY_WARNING": "2", "SWITCHBOARD_TOKEN_EXPIRY_GRACE": "1",
       "SWITCHBOARD_JWT_LEEWAY_SECONDS": "0"}
TTL = 3


def token(sub: str, ttl: int = TTL, channels: list[str] | None = None) -> str:
    return make_token(sub, channels=["chat:*"] if channels is None else channels, ttl=ttl)


def expiry(tok: str) -> float:
    """The token's ``exp`` (Unix time)."""
    return float(jwt.decode(tok, options={"verify_signature": False})["exp"])


async def test_refreshed_connection_lives_on_and_an_unrefreshed_one_is_closed(cluster: ServerFactory) -> None:
    server = await cluster.start(**ENV)
    alice, bob = token("alice"), token("bob")
    keeper, kept = await connect(server.url, alice)
    lapsed, gone = await connect(server.url, bob)
    for client in (keeper, lapsed):
        assert (await call(client, "subscribe", {"channel": "chat:t"}))["ok"]

    await until(lambda: kept.expiring and gone.expiring, what="expiring warnings")
    assert 0 <= kept.expiring[0]["in_seconds"] <= 2
    fresh = token("alice", ttl=60)
    ack = await call(keeper, "refresh", {"token": fresh})
    assert ack["ok"] is True and ack["unsubscribed"] == [] and ack["expires_at"] > time.time() + 50

    await until(lambda: gone.disconnects == 1, what="the unrefreshed connection to close")
    assert gone.closing == [{"code": "token_expired", "message": "token expired"}]
    # not before its token expired (measured against the token's own exp: a slow
    # connect on a busy machine must not count against the server)
    assert time.time() >= expiry(bob)
    # Past the old token's grace the refreshed connection is still there. Waiting is the
    # behaviour under test here, and a slow machine can only make it pass, not fail.
    await asyncio.sleep(max(0.0, expiry(alice) + 1.5 - time.time()))
    assert keeper.connected and kept.closing == [] and kept.disconnects == 0
    publisher, _ = await connect(server.url, token("carol", ttl=60))
    sent = await call(publisher, "publish", {"channel": "chat:t", "type": "t", "data": {"after": "refresh"}})
    await kept.wait_for_seq("chat:t", sent["seq"])  # the subscription survived the refresh
    for client in (keeper, publisher):
        await client.disconnect()


async def test_refresh_is_refused_for_another_user_or_a_bad_token(cluster: ServerFactory) -> None:
    server = await cluster.start(**ENV)
    client, rec = await connect(server.url, token("alice", ttl=60))
    await call(client, "subscribe", {"channel": "chat:r"})
    cases = {
        "permission_denied": token("mallory", ttl=60),
        "token_expired": token("alice", ttl=-10),
        "invalid_token": make_token("alice", secret="not-the-server-secret-0123456789"),
    }
    for code, bad in cases.items():
        ack = await call(client, "refresh", {"token": bad})
        assert ack["ok"] is False and ack["error"]["code"] == code, (code, ack)
    assert client.connected and rec.closing == []
    assert (await call(client, "publish", {"channel": "chat:r", "type": "t", "data": {}}))["ok"]
    await client.disconnect()


async def test_a_refresh_that_narrows_access_unsubscribes_what_it_no_longer_allows(cluster: ServerFactory) -> None:
    server = await cluster.start(**ENV)
    client, _ = await connect(server.url, token("alice", ttl=60, channels=["chat:*", "room:*"]))
    for channel in ("chat:keep", "room:drop"):
        assert (await call(client, "subscribe", {"channel": channel}))["ok"]
    ack = await call(client, "refresh", {"token": token("alice", ttl=60, channels=["chat:*"])})
    assert ack["ok"] is True and ack["unsubscribed"] == ["room:drop"]
    again = await call(client, "unsubscribe", {"channel": "room:drop"})
    assert again["error"]["code"] == "not_subscribed"
    assert (await call(client, "unsubscribe", {"channel": "chat:keep"}))["ok"]
    await client.disconnect()
