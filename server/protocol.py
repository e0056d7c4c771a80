"""What the Socket.IO server does with packets that break the protocol (issue 10).

python-socketio logs an ERROR with a traceback for every malformed packet, on
any Engine.IO session, authenticated or not (one probe wrote 18,549 of them),
and keeps an announced binary packet waiting for its attachments without a
limit: ``5<n>-`` with a huge ``n`` made it keep every binary frame after it,
and ``5`` with no count made it treat every later message as an attachment.

Here a protocol error is logged once per connection, at INFO, without a
traceback, and counted by kind (``switchboard_protocol_errors_total``). A
binary packet may announce 1 to ``max_attachments`` attachments, which together
may hold at most ``max_bytes`` and must all arrive within ``timeout`` seconds;
a packet that breaks any of these ends the connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# the start of a binary EVENT (5) or ACK (6): "<type><attachments>-", as Socket.IO 5 writes it
_BINARY_HEADER = re.compile(r"[56](\d{1,10})-")


class ProtocolError(Exception):
    """A packet the server will not take; ``kind`` labels the metric, ``close`` ends
    the connection (else the packet is dropped and the connection goes on)."""

    def __init__(self, kind: str, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.close = close


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """Binary attachments one packet may announce, and their total bytes and time."""

    max_attachments: int = 4
    max_bytes: int = 80 * 1024
    timeout: float = 10.0


def check_binary_header(data: str, limits: AttachmentLimits) -> None:
    """Raise ``ProtocolError`` (closing) unless ``data``, a binary packet, announces
    1 to ``limits.max_attachments`` attachments in the form Socket.IO writes."""
    found = _BINARY_HEADER.match(data)
    if found is None:
        raise ProtocolError("bad_binary_header", f"malformed binary packet header {data[:16]!r}", close=True)
    count = int(found.group(1))
    if not 1 <= count <= limits.max_attachments:
        raise ProtocolError("too_many_attachments",
                            f"binary packet announces {count} attachments (at most {limits.max_attachments})",
                            close=True)


class PendingBinary:
    """A binary packet waiting for its attachments: counts their bytes, and ends the
    connection through ``on_expired`` unless they all arrived within the timeout."""

    __slots__ = ("_timer", "packet", "size")

    def __init__(self, packet: Any, timeout: float, on_expired: Callable[[], None]) -> None:
        self.packet = packet
        self.size = 0
        self._timer = asyncio.get_running_loop().call_later(timeout, on_expired)

    def add(self, attachment: object, limits: AttachmentLimits) -> bool:
        """Add one attachment; True when the packet is complete."""
        if not isinstance(attachment, bytes):
            raise ProtocolError("bad_attachment", "a text message while binary attachments were due", close=True)
        self.size += len(attachment)
        if self.size > limits.max_bytes:
            raise ProtocolError("attachments_too_large",
                                f"binary attachments over {limits.max_bytes} bytes", close=True)
        return bool(self.packet.add_attachment(attachment))

    def cancel(self) -> None:
        self._timer.cancel()


class ProtocolErrors:
    """Logs a connection's first protocol error (INFO, no traceback) and counts all of them."""

    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self.count = count
        self._logged: set[str] = set()

    def report(self, eio_sid: str, error: ProtocolError) -> None:
        if self.count is not None:
            self.count(error.kind)
        if eio_sid in self._logged:
            return
        self._logged.add(eio_sid)
        log.info("protocol error from session %s (%s): %s%s; further ones on this connection are not logged",
                 eio_sid, error.kind, error, ", closing it" if error.close else "")

    def forget(self, eio_sid: str) -> None:
        self._logged.discard(eio_sid)
