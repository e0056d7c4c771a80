"""Socket.IO calls answered without a task per message (websocket connections).

python-socketio runs every incoming event through a task of engineio's, a task
of its own and the handler's coroutine, and its websocket reader starts a task
and a ``wait_for`` per message: under publish load that bookkeeping cost more
than the publish itself (profiled at ~35% of the server). For the calls
registered here, the websocket reader (``_WebSocket.wait``) hands the message
to ``InlineCalls`` instead: the packet is parsed with orjson, the handler's
synchronous part runs before the connection's next message is read (so one
connection's calls start in emit order, as before), and the handler replies
later, typically from a commit's callback. The ack is encoded once and sent
behind whatever the connection was sent before it.

Anything else (other namespaces, binary packets, unregistered events, a socket
not connected to the namespace) is left to python-socketio, unchanged.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any

import orjson
import socketio

from handlers.sockets import InlineHandler

from .delivery import send_now

log = logging.getLogger(__name__)
NAMESPACE = "/"

# an Engine.IO message ("4") holding a Socket.IO EVENT ("2") on the default
# namespace, with an optional ack id, then the JSON array of name and arguments
_EVENT = re.compile(r"42(\d{0,15})\[")


class InlineCalls:
    """The registry of inline calls, and the dispatcher ``_WebSocket.wait`` calls."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio
        self._handlers: dict[str, InlineHandler] = {}

    def on(self, event: str, handler: InlineHandler) -> None:
        self._handlers[event] = handler

    def __call__(self, eio_sid: str, message: str) -> bool:
        """Handle one Engine.IO text message if it is a registered call; False leaves it
        to python-socketio (nothing has been done with it then)."""
        found = _EVENT.match(message)
        if found is None:
            return False
        try:
            data = orjson.loads(message[found.end() - 1:])
        except orjson.JSONDecodeError:
            return False  # python-socketio reports malformed packets its own way
        if type(data) is not list or not data or type(data[0]) is not str:
            return False
        handler = self._handlers.get(data[0])
        if handler is None:
            return False
        manager = self._sio.manager
        sid = manager.sid_from_eio_sid(eio_sid, NAMESPACE)
        if sid is None or not manager.is_connected(sid, NAMESPACE):
            return False
        ack_id = found.group(1)
        reply = partial(self._ack, eio_sid, ack_id) if ack_id else None
        try:
            handler(sid, tuple(data[1:]), reply)
        except Exception:  # handlers answer their own errors; this is a bug, not the client's
            log.exception("inline %s from %s failed", data[0], sid)
        return True

    def _ack(self, eio_sid: str, ack_id: str, data: dict[str, Any]) -> None:
        socket = self._sio.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return  # gone while its call was committing: nobody to tell
        send_now(socket, f"3{ack_id}{orjson.dumps([data]).decode()}")
