"""Operations on real server processes: metrics, graceful drain, retention."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import call, connect, new_client
from tests.support.rawsocket import RawSocket
from tests.support.servers import ServerFactory, ServerProcess, make_token
from tests.support.waiting import LOADED, eventually

CHANNEL = "chat:ops"


def token(sub: str = "alice") -> str:
    return make_token(sub, channels=["chat:*"])


async def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_a_scripted_session(embedded: ServerFactory) -> None:
    server = await embedded.start()
    sub, rec = await connect(server.url, token("sub"))
    await call(sub, "subscribe", {"channel": CHANNEL})
    pub, _ = await connect(server.url, token("pub"))
    for i in range(5):
        assert (await call(pub, "publish", {"channel": CHANNEL, "type": "t", "data": {"i": i}}))["ok"]
    dup = await call(pub, "publish", {"channel": CHANNEL, "type": "t", "data": {}, "client_msg_id": "x"})
    again = await call(pub, "publish", {"channel": CHANNEL, "type": "t", "data": {}, "client_msg_id": "x"})
    assert dup["ok"] and again["duplicate"]
    denied = await call(pub, "publish", {"channel": "news:1", "type": "t", "data": {}})
    assert denied["error"]["code"] == "permission_denied"
    await rec.wait_for_seq(CHANNEL, 6)
    client, _ = new_client()
    with contextlib.suppress(socketio.exceptions.ConnectionError):
        await client.connect(server.url, auth={"token": "bad"}, transports=["websocket"], wait_timeout=LOADED)

    live = await scrape(server)
    assert value(live, "switchboard_connections") == 2
    assert value(live, "switchboard_subscriptions") == 1
    assert value(live, "switchboard_live_channels") == 1
    assert value(live, "switchboard_publishes_total", transport="socket", outcome="ok") == 6
    assert value(live, "switchboard_publishes_total", transport="socket", outcome="duplicate") == 1
    assert value(live, "switchboard_publishes_total", transport="socket", outcome="permission_denied") == 1
    assert value(live, "switchboard_deliveries_total") == 6  # one subscriber, six events
    assert value(live, "switchboard_delivery_latency_seconds_count") == 6
    assert value(live, "switchboard_commit_batch_size_sum") == 7  # 6 new + the retry, found stored
    assert value(live, "switchboard_publish_seconds_count", transport="socket") == 8
    assert value(live, "switchboard_connections_refused_total", code="invalid_token") == 1

    await sub.disconnect()
    await pub.disconnect()

    async def all_gone() -> Any:  # the server processes the disconnects asynchronously
        samples = await scrape(server)
        return samples if value(samples, "switchboard_connections") == 0 else None

    after = await eventually(all_gone, what="no connections in the metrics")
    assert value(after, "switchboard_live_channels") == 0
    # python-socketio's client closes its transport as it leaves: either label is a client leaving
    ended = {labels: v for (name, labels), v in after.items() if name == "switchboard_disconnects_total"}
    assert set(ended) <= {(("reason", "client"),), (("reason", "transport_close"),)}, ended
    assert sum(ended.values()) == 2


class Roamer:
    """A subscriber that, like a mobile app, reconnects to another instance when its
    connection ends and resubscribes with ``since`` = the last seq it saw."""

    def __init__(self, urls: list[str], name: str) -> None:
        self.urls = urls
        self.name = name
        self.seqs: list[int] = []
        self.closing_reasons: list[str] = []
        self.lost = asyncio.Event()
        self.client: socketio.AsyncClient | None = None

    async def start(self, index: int) -> None:
        client = socketio.AsyncClient(reconnection=False)
        client.on("event", lambda e: self.seqs.append(e["seq"]))
        client.on("closing", lambda d: self.closing_reasons.append(d["code"]))
        client.on("disconnect", lambda *_: self.lost.set())
        await client.connect(self.urls[index], auth={"token": token(self.name)}, transports=["websocket"])
        since = {"since": self.seqs[-1]} if self.seqs else {}
        ack = await client.call("subscribe", {"channel": CHANNEL, **since}, timeout=10)
        assert ack["ok"] and ack["recovered"], ack
        self.client = client

    async def roam(self, survivor: int) -> None:
        await asyncio.wait_for(self.lost.wait(), LOADED)
        await self.start(survivor)


async def publish_with_retries(urls: list[str], count: int, acked: dict[str, int], stop_first: asyncio.Event) -> None:
    """Publish ``count`` events with ids; on failure move to the next instance and retry the same id."""
    index = 0
    client, _ = await connect(urls[index], token("pub"))
    for i in range(count):
        msg = {"channel": CHANNEL, "type": "t", "data": {"i": i}, "client_msg_id": f"m{i}"}
        while True:
            ack: dict[str, Any] | None = None
            with contextlib.suppress(socketio.exceptions.SocketIOError, socketio.exceptions.TimeoutError):
                ack = await client.call("publish", msg, timeout=5) if client.connected else None
            if ack and ack["ok"]:
                acked[msg["client_msg_id"]] = ack["seq"]
                break
            with contextlib.suppress(Exception):
                await client.disconnect()
            index = (index + 1) % len(urls)
            client, _ = await connect(urls[index], token("pub"))
        if i == count // 3:
            stop_first.set()
    await client.disconnect()


async def test_sigterm_drains_and_clients_recover_on_the_other_instance(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    urls = [a.url, b.url]
    roamers = [Roamer(urls, f"r{i}") for i in range(4)]
    for i, roamer in enumerate(roamers):
        await roamer.start(i % 2)
    acked: dict[str, int] = {}
    stop_first = asyncio.Event()
    publishing = asyncio.create_task(publish_with_retries(urls, 300, acked, stop_first))
    await stop_first.wait()
    a.proc.send_signal(signal.SIGTERM)
    moving = [asyncio.create_task(r.roam(1)) for r in roamers[::2]]  # the ones on instance a
    await publishing
    await asyncio.gather(*moving)
    await eventually(lambda: a.proc.poll() is not None, what="instance a to exit")
    assert a.proc.returncode == 0, a.log_tail()

    head = max(acked.values())
    assert sorted(acked.values()) == list(range(1, 301)), "every publish stored exactly once"
    for roamer in roamers:
        await eventually(lambda roamer=roamer: roamer.seqs and roamer.seqs[-1] >= head, what=f"{roamer.name} at {head}")
        assert roamer.seqs == list(range(1, head + 1)), roamer.name
    for roamer in roamers[::2]:
        assert roamer.closing_reasons == ["shutdown"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as http:
        async with http.get(f"{b.url}/api/v1/channels/{CHANNEL}/events", params={"after": "0", "limit": "1000"}) as r:
            stored = {e["client_msg_id"]: e["seq"] for e in (await r.json())["events"]}
    assert stored == acked
    for roamer in roamers:
        if roamer.client is not None and roamer.client.connected:
            await roamer.client.disconnect()


async def test_a_second_sigterm_while_draining_is_ignored_and_the_server_still_exits_cleanly(
    cluster: ServerFactory,
) -> None:
    """A second SIGTERM during shutdown raised aiohttp's GracefulExit again: run_app
    cancelled the shutdown midway (cleanup contexts cut off, a CleanupError traceback,
    exit status 1). Seen when a supervisor or a person signals twice."""
    server = await cluster.start(SWITCHBOARD_SHUTDOWN_TIMEOUT="4")
    # a client that stops reading holds the drain (its close handshake is never answered)
    stalled = await RawSocket.connect(server.url, token("stalled"))
    server.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: "shutting down: draining" in server.log_path.read_text(errors="replace"),
                     what="the shutdown to begin")
    assert server.proc.poll() is None, server.log_tail()
    server.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: server.proc.poll() is not None, what="the server to exit")
    log = server.log_path.read_text(errors="replace")
    assert server.proc.returncode == 0, server.log_tail()
    assert "already shutting down: SIGTERM ignored" in log, server.log_tail()
    assert "Traceback" not in log and "CleanupError" not in log, server.log_tail()
    await stalled.close()


async def _retention_case(server: ServerProcess, expect_first: int, publish: int) -> None:
    pub, _ = await connect(server.url, token("pub"))
    for i in range(publish):
        assert (await call(pub, "publish", {"channel": CHANNEL, "type": "t", "data": {"i": i}}))["ok"]
    await pub.disconnect()


async def wait_for_first(server: ServerProcess, first: int, timeout: float = LOADED) -> dict[str, Any]:
    """The first page of history once retention has moved its start to ``first``."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as http:
        async def pruned() -> dict[str, Any] | None:
            async with http.get(f"{server.url}/api/v1/channels/{CHANNEL}/events", params={"after": "0"}) as r:
                page: dict[str, Any] = await r.json()
            assert page["first"] == first, f"first is {page['first']}"
            return page

        result: dict[str, Any] = await eventually(pruned, timeout, f"history to start at {first}", interval=0.1)
        return result


async def test_retention_by_count_on_postgres(cluster: ServerFactory, tmp_path: Path) -> None:
    config = tmp_path / "channels.toml"
    config.write_text("[namespaces.chat]\nhistory_max_events = 5\n")
    server = await cluster.start(SWITCHBOARD_CHANNELS_CONFIG=str(config), SWITCHBOARD_RETENTION_INTERVAL_SECONDS="0.2")
    await _retention_case(server, 16, 20)
    page = await wait_for_first(server, 16)
    assert (page["first"], page["head"]) == (16, 20)
    assert [e["seq"] for e in page["events"]] == [16, 17, 18, 19, 20]
    await assert_recovery_bounds(server, first=16)


async def test_retention_by_age_on_sqlite(embedded: ServerFactory, tmp_path: Path) -> None:
    config = tmp_path / "channels.toml"
    # The second batch must still be younger than the age limit when it is checked:
    # 3 s leaves a loaded machine room for five publishes and the reads below.
    config.write_text("[namespaces.chat]\nhistory_max_age_seconds = 3\n")
    server = await embedded.start(SWITCHBOARD_CHANNELS_CONFIG=str(config), SWITCHBOARD_RETENTION_INTERVAL_SECONDS="0.2")
    await _retention_case(server, 11, 10)
    await wait_for_first(server, 11)  # all ten aged out (the wait is the age limit, not a guess)
    await _retention_case(server, 11, 5)  # seqs 11..15, younger than the limit
    page = await wait_for_first(server, 11)
    assert (page["first"], page["head"]) == (11, 15)
    await assert_recovery_bounds(server, first=11)


async def assert_recovery_bounds(server: ServerProcess, first: int) -> None:
    client, rec = await connect(server.url, token())
    old = await call(client, "subscribe", {"channel": CHANNEL, "since": first - 2})
    assert old["ok"] and old["recovered"] is False
    await call(client, "unsubscribe", {"channel": CHANNEL})
    kept = await call(client, "subscribe", {"channel": CHANNEL, "since": first - 1})
    assert kept["ok"] and kept["recovered"] is True
    assert rec.seqs(CHANNEL)[-1] == kept["head"]
    assert rec.seqs(CHANNEL)[0] == first
    await client.disconnect()


async def test_json_logs_carry_ids_and_never_a_token_or_secret(embedded: ServerFactory) -> None:
    import json

    from tests.support.servers import TEST_SECRET

    server = await embedded.start(SWITCHBOARD_LOG_FORMAT="json", SWITCHBOARD_LOG_LEVEL="DEBUG")
    by_query = token("querier")
    refused = make_token("mallory", secret="wrong-secret-wrong-secret-wrong-secret")
    rest = token("rester")
    client, _ = new_client()
    await client.connect(f"{server.url}?token={by_query}", transports=["websocket"])
    assert (await call(client, "publish", {"channel": "nope:1", "type": "t", "data": {}}))["ok"] is False
    await client.disconnect()
    bad, _ = new_client()
    with contextlib.suppress(socketio.exceptions.ConnectionError):
        await bad.connect(server.url, auth={"token": refused}, transports=["websocket"], wait_timeout=LOADED)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {rest}", "X-Request-Id": "req-42"}
        async with http.get(f"{server.url}/api/v1/channels/news:1/events", headers=headers) as r:
            assert r.status == 403 and r.headers["X-Request-Id"] == "req-42"
        async with http.get(f"{server.url}/api/v1/channels/chat:1/events?token={rest}", headers=headers) as r:
            assert r.status == 400  # REST takes no ?token=; the URL must not reach the logs either
    await embedded.astop_all()

    text = server.log_path.read_text()
    for secret in (by_query, refused, rest, TEST_SECRET):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg", "instance"} <= set(line) for line in lines)
    assert any(line.get("request") == "req-42" and "permission_denied" in line["msg"] for line in lines)
    assert any(line.get("conn") and "permission_denied" in line["msg"] for line in lines)
    assert any("connection refused: invalid_token" in line["msg"] for line in lines)
