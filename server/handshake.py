"""Engine.IO sessions that have not connected to the Socket.IO namespace yet.

A session costs memory from its first request (~17.6 KiB), before the client
sends ``40`` and its token: the connection limits, which run at that connect,
never saw it, and one probe held 3,000 such sessions open for as long as it
liked. Here every session must connect within ``timeout`` seconds (else it is
closed), and one client IP may hold at most ``per_ip`` of them at a time (the
next session it opens is refused with 429 before any is created).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Handshakes:
    """Open sessions not yet connected to the namespace, by client IP, each with a
    deadline. The deadline is the same for every session, so they fall due in the
    order they opened: one FIFO and one timer for its head, as ``PingClock``."""

    def __init__(self, timeout: float, per_ip: int, on_expired: Callable[[str], None]) -> None:
        self.timeout = timeout
        self.per_ip = per_ip  # 0: no cap
        self._on_expired = on_expired
        self._ip_of: dict[str, str] = {}
        self._open: dict[str, int] = {}  # client IP -> sessions of it not yet connected
        self._due: deque[tuple[float, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def full(self, ip: str) -> bool:
        """Whether ``ip`` may not open another session now."""
        return self.per_ip > 0 and self._open.get(ip, 0) >= self.per_ip

    def opened(self, eio_sid: str, ip: str) -> None:
        self._ip_of[eio_sid] = ip
        self._open[ip] = self._open.get(ip, 0) + 1
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self.timeout, eio_sid))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._fire)

    def done(self, eio_sid: str) -> None:
        """The session connected to the namespace, or closed: it no longer counts."""
        ip = self._ip_of.pop(eio_sid, None)
        if ip is None:
            return
        left = self._open[ip] - 1
        if left:
            self._open[ip] = left
        else:
            del self._open[ip]

    def pending(self) -> int:
        return len(self._ip_of)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            eio_sid = due.popleft()[1]
            if eio_sid in self._ip_of:  # still not connected
                self.done(eio_sid)
                self._on_expired(eio_sid)
        if due:
            self._timer = loop.call_at(due[0][0], self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
