"""Engine.IO 4 / Socket.IO 5 spoken by hand over aiohttp: a client that can stop reading.

python-socketio's client reads its socket in a background task whatever its
handlers do, so it cannot play a phone that stopped reading. This one reads only
when asked; while it does not, aiohttp buffers at most ~128 KiB and then stops
reading the TCP socket, and the server's writes back up.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.waiting import LOADED


class RawSocket:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self.ws = ws
        self._ack = 0
        self.events: list[list[Any]] = []  # every ["name", data] received, in order
        self.disconnected = False  # Socket.IO disconnect packet received
        self.closed = False  # the WebSocket is closed

    @classmethod
    async def connect(cls, url: str, token: str, **headers: str) -> RawSocket:
        http = aiohttp.ClientSession()
        ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        ws = await http.ws_connect(ws_url, headers=headers)
        sock = cls(http, ws)
        assert (await ws.receive_str()).startswith("0")  # engine.io open
        await ws.send_str("40" + json.dumps({"token": token}))
        reply = await sock._next()
        assert reply.startswith("40"), reply
        return sock

    async def call(self, event: str, data: Any, timeout: float = LOADED) -> Any:
        """Emit with an ack; events arriving meanwhile are recorded."""
        self._ack += 1
        ack_id = self._ack
        await self.ws.send_str(f"42{ack_id}" + json.dumps([event, data]))
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._next()
                if frame.startswith(f"43{ack_id}["):
                    return json.loads(frame[len(f"43{ack_id}"):])[0]

    async def emit(self, event: str, data: Any) -> int:
        """Emit with an ack id and do not read: the ack (if any) is recorded by later reads."""
        self._ack += 1
        await self.ws.send_str(f"42{self._ack}" + json.dumps([event, data]))
        return self._ack

    async def read_all(self, timeout: float) -> None:
        """Read until the server closes the connection (or ``timeout`` passes)."""
        try:
            async with asyncio.timeout(timeout):
                while not self.closed:
                    await self._next()
        except TimeoutError:
            pass

    async def _next(self) -> str:
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                self.closed = True
                return ""
            data = str(msg.data)
            if data == "2":
                await self.ws.send_str("3")  # pong
            elif data == "1":
                self.closed = True  # engine.io close
                return data
            elif data.startswith("42"):
                self.events.append(json.loads(data[2:]))
            elif data.startswith("41"):
                self.disconnected = True
            return data

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await self._http.close()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in KiB from /proc (``VmHWM``: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} not in /proc/{pid}/status")
