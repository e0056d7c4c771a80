"""Per-task context for logs: which connection or request a log line is about.

Each Socket.IO handler and each HTTP request runs in its own task, so a
``ContextVar`` set at its start labels every log line it causes.
"""

from __future__ import annotations

from contextvars import ContextVar

connection_id: ContextVar[str | None] = ContextVar("connection_id", default=None)
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
