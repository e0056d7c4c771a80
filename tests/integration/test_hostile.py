"""Issue 10, hostile clients, on real instances (PostgreSQL + Redis): what a client
that does not play by the protocol costs the server, and that it is cut off by a
limit instead of absorbed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.support.rawsocket import RawSocket, rss_kib
from tests.support.servers import ServerFactory, ServerProcess, make_token

BIG = "chat:big"
READER = make_token("reader", channels=["chat:*"])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited {timeout}s for {what}")


async def metrics(server: ServerProcess) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        return await r.text()


async def fill(server: ServerProcess, channel: str, events: int, size: int) -> None:
    """``events`` events of about ``size`` bytes each, through the server-to-server batch API."""
    backend = {"Authorization": f"Bearer {make_token('backend', role='server')}"}
    per_batch = max(1, min(500, (3 << 20) // (size + 200)))
    async with aiohttp.ClientSession(headers=backend) as http:
        for start in range(0, events, per_batch):
            batch = [{"channel": channel, "type": "t", "data": {"i": i, "b": "x" * size}}
                     for i in range(start, min(events, start + per_batch))]
            async with http.post(server.url + "/api/v1/server/publish", json={"events": batch}) as r:
                assert r.status == 200, await r.text()


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


# -- 2. replies count against the send bound; history pages are bounded -------------------

HISTORY_CALLS = 15
EVENTS = 200
EVENT_BYTES = 60_000  # 12 MB of history: each `history {limit: 1000}` asks for all of it
RSS_BOUND_MIB = 40  # measured +6.8 MiB with 1,000 such events; the old code grew +1,071 MiB


async def test_a_client_that_does_not_read_is_cut_off_whatever_it_asks_for(cluster: ServerFactory) -> None:
    server = await cluster.start()
    await fill(server, BIG, EVENTS, EVENT_BYTES)
    stalled = await RawSocket.connect(server.url, READER)
    pid = server.proc.pid
    before = rss_kib(pid)
    reset_peak(pid)
    for ack_id in range(1, HISTORY_CALLS + 1):  # ... and it never reads
        await stalled.ws.send_str(f"42{ack_id}" + json.dumps(["history", {"channel": BIG, "limit": 1000}]))

    async def cut_off() -> bool:
        return 'switchboard_disconnects_total{reason="slow_consumer"} 1.0' in await metrics(server)

    await wait_until(cut_off, 30, "the stalled client to be cut off as slow_consumer")
    grew_mib = (rss_kib(pid, "VmHWM") - before) / 1024
    assert grew_mib < RSS_BOUND_MIB, f"peak RSS grew {grew_mib:.1f} MiB (bound {RSS_BOUND_MIB})"
    await stalled.read_all(timeout=15)  # it wakes up: the replies that fitted, then why it was cut
    assert [e[1]["code"] for e in stalled.events if e[0] == "closing"] == ["slow_consumer"]
    assert stalled.closed
    await stalled.close()


async def test_history_pages_are_bounded_in_bytes_and_continue_where_they_stopped(cluster: ServerFactory) -> None:
    server = await cluster.start(SWITCHBOARD_HISTORY_MAX_BYTES="300000")
    await fill(server, BIG, 60, EVENT_BYTES)
    pid = server.proc.pid
    auth = {"Authorization": f"Bearer {READER}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async def page(after: int) -> tuple[dict[str, object], int]:
            async with http.get(f"{server.url}/api/v1/channels/{BIG}/events?after={after}&limit=1000") as r:
                assert r.status == 200
                body = await r.read()
                return json.loads(body), len(body)

        before = rss_kib(pid)
        reset_peak(pid)
        pages = await asyncio.gather(*(page(0) for _ in range(10)))  # the probe: ten at once
        grew_mib = (rss_kib(pid, "VmHWM") - before) / 1024
        first, size = pages[0]
        assert size < 300_000 + 4096, size
        assert first["next_after"] == first["events"][-1]["seq"] < 60  # type: ignore[index]
        assert grew_mib < 20, f"ten concurrent pages grew peak RSS {grew_mib:.1f} MiB"
        seqs: list[int] = []
        after: object = 0
        while after is not None:  # paging on gets every event once, in order
            got, _ = await page(int(after))  # type: ignore[call-overload]
            seqs += [e["seq"] for e in got["events"]]  # type: ignore[attr-defined]
            after = got["next_after"]
        assert seqs == list(range(1, 61))
        async with http.get(f"{server.url}/api/v1/channels/{BIG}/events?limit=1000") as r:
            latest = await r.json()  # newest first: the newest events that fit, head included
        assert latest["events"][-1]["seq"] == 60 and 1 < latest["events"][0]["seq"]
    stalled = await RawSocket.connect(server.url, READER)
    ack = await stalled.call("history", {"channel": BIG, "after": 0, "limit": 1000})
    assert ack["ok"] and ack["next_after"] == ack["events"][-1]["seq"] < 60  # the socket's pages too
    await stalled.close()


# -- 3 and 6. binary attachments are bounded; protocol errors are logged once, counted ----------

async def raw_ws(server: ServerProcess, http: aiohttp.ClientSession, *, join: bool) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0")
    if join:
        await ws.send_str("40" + json.dumps({"token": READER}))
        assert (await ws.receive_str()).startswith("40")
    return ws


async def closed_within(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> bool:
    """True when the server ends the session (Engine.IO CLOSE or the websocket closes) in time."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.ERROR) or msg.data == "1":
                    return True
                if msg.data == "2":
                    await ws.send_str("3")
    except TimeoutError:
        return False


def log_text(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


async def test_binary_attachments_are_bounded_and_bad_headers_end_the_connection(embedded: ServerFactory) -> None:
    server = await embedded.start(SWITCHBOARD_ATTACHMENT_TIMEOUT="1")
    placeholder = json.dumps(["publish", {"_placeholder": True, "num": 0}])
    async with aiohttp.ClientSession() as http:
        for header in ["459999999999-" + placeholder, "45", "46", "451-", "45x-" + placeholder]:
            ws = await raw_ws(server, http, join=True)
            await ws.send_str(header)
            for _ in range(3):  # what the old code kept as attachments, until close
                if ws.closed:
                    break
                await ws.send_bytes(b"\0" * 65536)
            assert await closed_within(ws, 5), f"{header[:20]!r} did not end the connection"
            await ws.close()
        ws = await raw_ws(server, http, join=True)  # four announced, but more bytes than one message may hold
        await ws.send_str("454-" + json.dumps(["publish", [{"_placeholder": True, "num": i} for i in range(4)]]))
        for _ in range(4):
            if not ws.closed:
                await ws.send_bytes(b"\0" * 60_000)
        assert await closed_within(ws, 5), "attachments over the message cap did not end the connection"
        await ws.close()
        ws = await raw_ws(server, http, join=True)  # announced, never sent: ends after the timeout
        await ws.send_str("451-" + placeholder)
        assert await closed_within(ws, 10), "an unfinished binary packet was not timed out"
        await ws.close()
        ws = await raw_ws(server, http, join=True)  # a complete, small binary packet is still just a bad call
        await ws.send_str("451-7" + placeholder)
        await ws.send_bytes(b"\x01\x02")
        async with asyncio.timeout(5):
            reply = await ws.receive_str()
        assert reply.startswith("437[") and json.loads(reply[3:])[0]["error"]["code"] == "bad_request", reply
        await ws.close()
    text = log_text(server)
    assert "Traceback" not in text
    for kind in ("too_many_attachments", "bad_binary_header", "attachments_too_large", "attachment_timeout"):
        assert f"({kind})" in text, kind


async def test_protocol_errors_are_logged_once_per_connection_without_traceback_and_counted(
    embedded: ServerFactory,
) -> None:
    server = await embedded.start()
    garbage = ['42["publish", {broken', "4Z", '42{"not":"a list"}', "42[123]", '43["x"]', "42[]", "4"]
    async with aiohttp.ClientSession() as http:
        anonymous = await raw_ws(server, http, join=False)  # never sends 40
        joined = await raw_ws(server, http, join=True)
        for _ in range(50):
            for text in garbage:
                await anonymous.send_str(text)
                await joined.send_str(text)
        await joined.send_str('429["history",{"channel":"chat:after"}]')  # still served after all that
        async with asyncio.timeout(10):
            while not (reply := await joined.receive_str()).startswith("439"):
                pass
        assert json.loads(reply[3:])[0]["ok"] is True
        text = await metrics(server)
        for ws in (anonymous, joined):
            await ws.close()
    log = log_text(server)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert log.count("protocol error from session") == 2, log[-3000:]
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("switchboard_protocol_errors_total{"))
    assert counted == 2 * 50 * len(garbage), text
    assert 'switchboard_protocol_errors_total{kind="not_connected"}' in text


# -- 7a. no 500 from the Engine.IO endpoint -------------------------------------------------

async def open_polling(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/socket.io/?EIO=4&transport=polling") as r:
        assert r.status == 200
        return str(json.loads((await r.text())[1:])["sid"])


async def test_the_engineio_endpoint_answers_bad_requests_with_400_never_500(embedded: ServerFactory) -> None:
    server = await embedded.start()
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        sid = await open_polling(http, server.url)
        async with http.post(f"{base}&sid={sid}", data="1") as r:  # the client closes its session
            assert r.status == 200
        statuses: dict[str, int] = {}
        for name, method, query, body in [
            ("post after close", "POST", f"&sid={sid}", "40"),
            ("get after close", "GET", f"&sid={sid}", None),
            ("post unknown sid", "POST", "&sid=nope", "40"),
            ("bad jsonp", "GET", "&j=x", None),
            ("bad transport", "GET", "&transport=carrier-pigeon", None),
        ]:
            async with http.request(method, base + query, data=body) as r:
                statuses[name] = r.status
        open_sid = await open_polling(http, server.url)
        for name, body in [("not utf-8", b"\xff\xfe\x00"), ("bad payload", b"b!!!!\x1e42[]"), ("empty", b"")]:
            async with http.post(f"{base}&sid={open_sid}", data=body) as r:
                statuses[name] = r.status
    assert all(status < 500 for status in statuses.values()), statuses
    assert statuses["post after close"] == statuses["get after close"] == statuses["post unknown sid"] == 400, statuses
    log = log_text(server)
    assert "Traceback" not in log, log[-3000:]


async def test_a_polling_post_of_a_packet_clients_do_not_send_is_answered_400_at_once(embedded: ServerFactory) -> None:
    """engineio answered OPEN, PING or NOOP in a POST by disconnecting with wait=True,
    waiting for a GET that never came: the POST hung (found by the fuzzer)."""
    server = await embedded.start()
    base = server.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        for body in ("6", "2", "0", "40\x1e6"):
            sid = await open_polling(http, server.url)
            async with http.post(f"{base}&sid={sid}", data=body) as r:
                assert r.status == 400, body
            async with http.get(f"{base}&sid={sid}") as r:  # the session is gone
                assert r.status == 400, body
    log = log_text(server)
    assert "Traceback" not in log, log[-3000:]


async def test_an_engineio_packet_type_that_does_not_exist_ends_the_websocket_without_traceback(
    embedded: ServerFactory,
) -> None:
    """engineio indexed its packet names with the client's digit: IndexError and a
    traceback per frame (found by the fuzzer)."""
    server = await embedded.start()
    async with aiohttp.ClientSession() as http:
        for frame in ("9", "7hello", "8"):
            ws = await raw_ws(server, http, join=True)
            await ws.send_str(frame)
            assert await closed_within(ws, 10), frame
    log = log_text(server)
    assert "Traceback" not in log and "(unknown_packet)" in log, log[-3000:]


# -- 9. sessions that never connect are closed, and capped per IP ----------------------------

async def test_sessions_that_never_send_40_are_closed_after_the_deadline_and_capped_per_ip(
    embedded: ServerFactory,
) -> None:
    server = await embedded.start(SWITCHBOARD_CONNECT_TIMEOUT="1", SWITCHBOARD_LIMIT_PENDING_SESSIONS_PER_IP="5",
                                  SWITCHBOARD_TRUST_FORWARDED_FOR="true")
    ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http:
        async def session(ip: str) -> aiohttp.ClientWebSocketResponse:
            ws = await http.ws_connect(ws_url, headers={"X-Forwarded-For": ip})
            assert (await ws.receive_str()).startswith("0")
            return ws

        held = [await session("10.9.0.1") for _ in range(5)]  # ... and none of them sends 40
        try:
            await session("10.9.0.1")
            raise AssertionError("a sixth session not yet connected was accepted from one address")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429
        other = await session("10.9.0.2")  # another address is not affected
        for ws in [*held, other]:
            assert await closed_within(ws, 10), "a session that never connected was held past the deadline"
            await ws.close()
        again = await session("10.9.0.1")  # closed sessions no longer count
        await again.send_str("40" + json.dumps({"token": READER}))
        assert (await again.receive_str()).startswith("40")
        await asyncio.sleep(1.5)  # past the deadline: a connected session is not affected
        await again.send_str('421["history",{"channel":"chat:x"}]')
        async with asyncio.timeout(5):
            while not (reply := await again.receive_str()).startswith("431"):
                pass
        assert json.loads(reply[3:])[0]["ok"] is True
        await again.close()
    text = await metrics(server)
    assert 'switchboard_protocol_errors_total{kind="connect_timeout"} 6.0' in text, text
    assert 'switchboard_connections_refused_total{code="too_many_sessions"} 1.0' in text


# -- 10. no part of a token reaches the log ---------------------------------------------------

async def raw_http(server: ServerProcess, head: str) -> bytes:
    """Send ``head`` as-is (aiohttp's client refuses what its server does not) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode())
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_tokens_are_redacted_from_the_log_whatever_their_length(embedded: ServerFactory) -> None:
    server = await embedded.start()
    secret_part = "SECRETPART"
    long_token = make_token("alice", pad="Q" * 9000) + secret_part  # past aiohttp's 8,190-byte line limit
    short_token = make_token("alice") + secret_part
    close = "Host: x\r\nConnection: close\r\n"
    heads = [
        f"GET /socket.io/?EIO=4&transport=polling&token={long_token} HTTP/1.1\r\n{close}\r\n",
        f"GET /api/v1/channels/chat:1/events HTTP/1.1\r\n{close}Authorization: Bearer {long_token}\r\n\r\n",
        f"GET /api/v1/channels/chat:1/events?token={short_token} HTTP/1.1\r\n{close}\r\n",
        f"GET /socket.io/?EIO=4&transport=polling&token={short_token} HTTP/1.1\r\n{close}"
        f"Authorization: Bearer {short_token}\r\n\r\n",
    ]
    for head in heads:
        answer = await raw_http(server, head)
        assert answer.startswith(b"HTTP/1."), answer[:100]
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as r:
        assert r.status == 200  # the log has everything before it
    log = log_text(server)
    assert log.count("Got more than 8190 bytes") == 2, log[-4000:]  # the oversize requests were logged...
    assert "Traceback" not in log  # ... as one line each
    for leaked in (secret_part, long_token.split(".")[1][:12], short_token.split(".")[1][:12]):
        assert leaked not in log, f"{leaked!r} reached the log:\n{log[-4000:]}"
