"""A fuzzer that stays: hostile Engine.IO / Socket.IO frames against a real server.

Hypothesis generates sessions of random and mutated frames (Engine.IO packets,
Socket.IO packets, calls with random payloads, garbage text and bytes) and plays
each over a websocket or over HTTP long-polling, after a valid handshake or
without one, against one server process that lives for the whole module. Mean-
while a healthy subscriber holds a websocket and receives a steady stream of
events. Promises checked (DESIGN.md 5 and 6):

- no HTTP answer is a 5xx and the server process stays up;
- the healthy subscriber receives every event, in order, with no gap, and is
  never disconnected;
- the server's resident memory stays bounded;
- no traceback in the server log.

``SWITCHBOARD_FUZZ_EXAMPLES`` sets the number of sessions (default 120, about
30 s on a loaded 2-core machine); a soak run sets it to thousands, and then
examples are random rather than derandomized.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.clients import Recorder, call, connect
from tests.support.rawsocket import rss_kib
from tests.support.servers import ServerFactory, ServerProcess, make_token

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "120"))
SOAK = "SWITCHBOARD_FUZZ_EXAMPLES" in os.environ
HEALTH_CHANNEL = "chat:fuzz-health"
RSS_GROWTH_LIMIT_KIB = 48 * 1024
ANSWER_TIMEOUT = aiohttp.ClientTimeout(total=10)  # any HTTP exchange of a session (loaded machine)
T = TypeVar("T")

# ---- a background event loop: the subscriber lives across examples, and hypothesis
# ---- drives each example from synchronous code


@dataclass
class Harness:
    server: ServerProcess
    loop: asyncio.AbstractEventLoop
    token: str
    server_token: str
    recorder: Recorder = field(default_factory=Recorder)
    published: int = 0
    statuses: list[tuple[str, int]] = field(default_factory=list)  # (what, HTTP status) >= 500, this session
    sessions: dict[str, int] = field(default_factory=dict)
    step: str = ""  # what the player is waiting for, for the failure message
    baseline_rss_kib: int = 0
    peak_rss_kib: int = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("fuzz")
    factory = ServerFactory(tmp, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp / 'sb.db'}",
                                  "SWITCHBOARD_REDIS_URL": "memory://"})
    server = factory.start_sync()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-loop", daemon=True)
    thread.start()
    h = Harness(server, loop, make_token("fuzzer", channels=["chat:*"], ttl=3600),
                make_token("backend", role="server", ttl=3600))
    stop = asyncio.Event()
    healthy = h.run(_start_health(h, stop))
    try:
        yield h
    finally:
        h.run(_stop_health(h, stop, healthy))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        factory.stop_all()


async def _start_health(h: Harness, stop: asyncio.Event) -> tuple[Any, asyncio.Task[None]]:
    client, _ = await connect(h.server.url, make_token("watcher", channels=["chat:*"], ttl=3600), h.recorder)
    ack = await call(client, "subscribe", {"channel": HEALTH_CHANNEL})
    assert ack["ok"], ack
    h.baseline_rss_kib = rss_kib(h.server.proc.pid)
    return client, asyncio.create_task(_publish_steadily(h, stop))


async def _publish_steadily(h: Harness, stop: asyncio.Event) -> None:
    """One event every 20 ms through REST with the server token, for as long as the module runs."""
    url = f"{h.server.url}/api/v1/channels/{HEALTH_CHANNEL}/events"
    headers = {"Authorization": f"Bearer {h.server_token}"}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            async with http.post(url, json={"type": "tick", "data": {"n": h.published}}, headers=headers) as r:
                assert r.status == 201, await r.text()
                h.published = (await r.json())["seq"]
            h.peak_rss_kib = max(h.peak_rss_kib, rss_kib(h.server.proc.pid))
            try:
                await asyncio.wait_for(stop.wait(), 0.02)
            except TimeoutError:
                pass


async def _stop_health(h: Harness, stop: asyncio.Event, healthy: tuple[Any, asyncio.Task[None]]) -> None:
    client, publisher = healthy
    stop.set()
    await publisher
    await client.disconnect()


# ---- what a hostile peer sends

EVENT_NAMES = ["subscribe", "unsubscribe", "publish", "history", "presence", "refresh",
               "event", "closing", "message", "", "__proto__"]
CHANNELS = ["chat:fz", HEALTH_CHANNEL, "user:watcher", "user:fuzzer", "chat:", "nocolon", "chat:fz\n", "a" * 300]

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=16)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=10)
call_args = st.fixed_dictionaries({}, optional={
    "channel": st.sampled_from(CHANNELS) | st.text(max_size=12) | json_values,
    "since": st.integers(-5, 2**64) | json_values,
    "type": st.sampled_from(["t", "", "a b", "x" * 70]) | json_values,
    "data": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
    "client_msg_id": st.text(max_size=10) | json_values,
    "after": st.integers(-5, 2**64), "before": st.integers(-5, 2**64), "limit": st.integers(-5, 10**6),
    "token": st.sampled_from(["", "x.y.z"]) | st.text(max_size=20),
    "extra": json_values,
})
event_names = (st.sampled_from(EVENT_NAMES) | st.text(max_size=10))


@st.composite
def socketio_calls(draw: st.DrawFn) -> str:
    """``42[ack id][name, args...]``: a call, well formed or nearly."""
    ack = draw(st.none() | st.integers(0, 2**40))
    args = draw(st.lists(call_args | json_values, max_size=3))
    body = json.dumps([draw(event_names), *args])
    return "42" + ("" if ack is None else str(ack)) + body


socketio_packets = st.one_of(
    socketio_calls(),
    st.builds(lambda d: "40" + json.dumps(d), json_values),  # CONNECT with any auth
    st.sampled_from(["40", "41", "40/admin,", "42/other,[\"x\"]", "43", "431[]", "44{}", "47", "4",
                     "42", "42[", "42[]", "42{}", "42\"x\"", "42[1]", "42[null]", "4299999999999999999999[\"x\"]"]),
    st.builds(lambda n, t: "4" + str(n) + t, st.integers(0, 9).filter(lambda n: n not in (5, 6)), st.text(max_size=30)),
)
engineio_packets = st.one_of(
    st.sampled_from(["2", "3", "2probe", "3probe", "5", "6", "7", "", "b", "bAAAA", "8", "9"]),
    st.builds(lambda t: "4" + t, st.text(max_size=40)),
    st.text(max_size=40),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid frame with bytes flipped, cut short or repeated."""
    frame = draw(socketio_calls())
    # no lone surrogates: a websocket text frame is UTF-8, the client cannot send one
    chars = st.characters(exclude_categories=["Cs"])
    ops = draw(st.lists(st.tuples(st.sampled_from(["flip", "cut", "dup", "insert"]),
                                  st.integers(0, max(0, len(frame) - 1)), chars), min_size=1, max_size=3))
    for op, at, char in ops:
        at = min(at, max(0, len(frame) - 1))
        if op == "flip" and frame:
            frame = frame[:at] + char + frame[at + 1:]
        elif op == "cut":
            frame = frame[:at]
        elif op == "dup":
            frame = frame[:at] + frame[at:] * 2
        else:
            frame = frame[:at] + char + frame[at:]
    return frame


text_frames = st.one_of(socketio_packets, engineio_packets, mutated())
frames = st.one_of(text_frames, text_frames, text_frames, st.binary(max_size=64))
sessions = st.fixed_dictionaries({
    "transport": st.sampled_from(["websocket", "polling"]),
    "authenticated": st.booleans(),
    "frames": st.lists(frames, min_size=1, max_size=8),
})


# ---- players


async def play_websocket(h: Harness, authenticated: bool, frames: list[str | bytes]) -> None:
    async with aiohttp.ClientSession(timeout=ANSWER_TIMEOUT) as http:
        h.step = "websocket handshake"
        try:
            ws = await http.ws_connect(h.server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
        except aiohttp.WSServerHandshakeError as exc:
            _status(h, "websocket handshake", exc.status)
            return
        async with ws:
            h.step = "websocket open packet"
            opened = await ws.receive(timeout=10)
            assert str(opened.data).startswith("0"), opened
            if authenticated:
                await ws.send_str("40" + json.dumps({"token": h.token}))
            h.step = "websocket send"
            for frame in frames:
                if ws.closed:
                    break
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            h.step = "websocket drain"
            await _drain(ws)
            h.step = "websocket close"


async def _drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.1, most: float = 1.0) -> None:
    """Read what the server answers until it is quiet (or closes)."""
    deadline = time.monotonic() + most
    while not ws.closed and time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=quiet)
        except TimeoutError:
            return
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return
        if msg.data == "2":
            await ws.send_str("3")


async def play_polling(h: Harness, authenticated: bool, frames: list[str | bytes]) -> None:
    base = h.server.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=ANSWER_TIMEOUT) as http:
        h.step = "polling open"
        async with http.get(base) as r:
            _status(h, "polling open", r.status)
            opened = await r.text()
        if not opened.startswith("0"):
            return
        url = base + "&sid=" + json.loads(opened[1:])["sid"]
        batch: list[str] = ["40" + json.dumps({"token": h.token})] if authenticated else []
        for frame in frames:
            # binary frames travel base64-encoded in a polling payload ("b" + base64)
            batch.append("b" + base64.b64encode(frame).decode() if isinstance(frame, bytes) else frame)
        payloads = _payloads(batch, split=len(frames) % 2 == 0)
        for payload in payloads:
            h.step = f"polling POST {payload[:100]!r}"
            async with http.post(url, data=payload.encode("utf-8", "surrogatepass")) as r:
                _status(h, "polling POST", r.status)
                if r.status != 200:
                    return
            if payload.split("\x1e")[-1] == "1":
                return  # closed: a later request is an unknown session (400)
        h.step = "polling GET"
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                _status(h, "polling GET", r.status)
                await r.read()
        except TimeoutError:
            pass  # a long poll with nothing to say waits for the next ping: not an error


def _payloads(packets: list[str], *, split: bool) -> list[str]:
    """Packets joined with the record separator, one POST for all or one each; a close
    packet ends the session, so nothing is sent after it."""
    out: list[str] = []
    current: list[str] = []
    for packet in packets:
        current.append(packet)
        if split or packet == "1":
            out.append("\x1e".join(current))
            current = []
            if packet == "1":
                return out
    if current:
        out.append("\x1e".join(current))
    return out


def _shown(session: dict[str, Any]) -> str:
    frames = [f if len(f) < 200 else f[:200] + f"...({len(f)})" for f in session["frames"]]
    return f"{session['transport']} {'auth' if session['authenticated'] else 'anon'} {frames!r}"


def _status(h: Harness, what: str, status: int) -> None:
    if status < 500:
        return
    h.statuses.append((what, status))


# ---- the properties


@pytest.mark.timeout(max(120, EXAMPLES))  # about 0.2 s a session; a soak scales it
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not SOAK, print_blob=True,
          # a failing session can take seconds: shrinking is for soak runs, CI prints the example
          phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SOAK else [])],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(session=sessions)
def test_hostile_frames_break_nothing_for_anyone(harness: Harness, session: dict[str, Any]) -> None:
    play = play_websocket if session["transport"] == "websocket" else play_polling
    key = f"{session['transport']}/{'auth' if session['authenticated'] else 'anon'}"
    harness.statuses.clear()
    harness.sessions[key] = harness.sessions.get(key, 0) + 1
    try:
        harness.run(play(harness, session["authenticated"], session["frames"]))
    except TimeoutError:
        raise AssertionError(f"no answer from the server at step {harness.step!r} of "
                             f"{_shown(session)}\n{harness.server.log_tail(30)}") from None
    assert harness.server.proc.poll() is None, harness.server.log_tail(80)
    assert not harness.statuses, (harness.statuses, harness.server.log_tail(80))
    assert harness.recorder.disconnects == 0, "the healthy subscriber was disconnected"


def test_the_healthy_subscriber_got_every_event_in_order(harness: Harness) -> None:
    """Runs after the fuzzing (file order): every seq published during it arrived, once, in order."""
    head = harness.published
    assert head > 0
    harness.run(harness.recorder.wait_for_seq(HEALTH_CHANNEL, head, timeout=30))
    seqs = harness.recorder.seqs(HEALTH_CHANNEL)
    # the fuzzer may publish in the channel too (its token may): those seqs are in the stream as well
    assert seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[0] == 1, seqs[:20]
    assert harness.recorder.disconnects == 0


def test_the_server_memory_stayed_bounded(harness: Harness) -> None:
    growth = harness.peak_rss_kib - harness.baseline_rss_kib
    print(f"fuzz: {harness.sessions} sessions; RSS {harness.baseline_rss_kib} KiB -> peak "
          f"{harness.peak_rss_kib} KiB (+{growth} KiB); {harness.published} health events")
    assert growth < RSS_GROWTH_LIMIT_KIB, growth


def test_the_server_log_has_no_traceback(harness: Harness) -> None:
    log = Path(harness.server.log_path).read_text(errors="replace")
    tracebacks = log.count("Traceback (most recent call last)")
    first = log[log.index("Traceback"):][:1500] if tracebacks else ""
    assert tracebacks == 0, f"{tracebacks} tracebacks in the server log; the first:\n{first}"
