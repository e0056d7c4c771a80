"""Engine.IO sessions that have not connected to the Socket.IO namespace yet.

A session costs memory from its first request (~17.6 KiB), before the client
sends ``40`` and its token: the connection limits, which run at that connect,
never saw it, and one probe held 3,000 such sessions open for as long as it
liked. Here every session must connect within ``timeout`` seconds (else it is
closed), and one client IP may hold at most ``per_ip`` of them at a time (the
next session it opens is refused with 429 before any is created).
"""

from __future__ import annotations

from collections.abc import Callable

from .timers import FifoTimer


class Handshakes:
    """Open sessions not yet connected to the namespace, by client IP, each with a
    deadline (the same for every session: one ``FifoTimer``)."""

    def __init__(self, timeout: float, per_ip: int, on_expired: Callable[[str], None]) -> None:
        self.timeout = timeout
        self.per_ip = per_ip  # 0: no cap
        self._on_expired = on_expired
        self._ip_of: dict[str, str] = {}
        self._open: dict[str, int] = {}  # client IP -> sessions of it not yet connected
        self._deadlines = FifoTimer(timeout, self._expire)

    def full(self, ip: str) -> bool:
        """Whether ``ip`` may not open another session now."""
        return self.per_ip > 0 and self._open.get(ip, 0) >= self.per_ip

    def opened(self, eio_sid: str, ip: str) -> None:
        self._ip_of[eio_sid] = ip
        self._open[ip] = self._open.get(ip, 0) + 1
        self._deadlines.add(eio_sid)

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

    def _expire(self, eio_sid: str) -> None:
        if eio_sid in self._ip_of:  # still not connected
            self.done(eio_sid)
            self._on_expired(eio_sid)

    def close(self) -> None:
        self._deadlines.close()
