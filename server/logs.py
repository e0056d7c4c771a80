"""Logging: text or JSON lines, each carrying the instance and the connection or
request it is about, and an access logger that never writes query strings
(they may carry ``?token=``). Every line, from any logger, goes through
``Redact``: no part of a token is written, whatever quotes it (aiohttp's
parser errors quote the first ~100 bytes of an oversize request line or header)."""

from __future__ import annotations

import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from handlers.context import connection_id, request_id


class ContextFilter(logging.Filter):
    """Adds ``instance``, ``conn`` and ``request`` to every record."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self._instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = self._instance
        record.conn = connection_id.get()
        record.request = request_id.get()
        return True


# what may carry a credential: a token= parameter (also access_token=), an
# Authorization value, a Bearer credential, and anything shaped like a JWT, whole or cut
_SECRET = re.compile(
    r"""(token=)[^&\s'"\\]*"""
    r"""|(authorization['"]?\s*[:=]\s*['"]?)[^\r\n'"\\]*"""
    r"""|(bearer\s+)[^\s'"\\,;]*"""
    r"""|eyJ[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]*){0,2}""",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every credential it quotes replaced by ``[redacted]``."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + "[redacted]", text)


class Redact(logging.Filter):
    """Redacts credentials from a record's message and traceback (``redact``). aiohttp's
    errors for requests it cannot parse (a client's bad bytes, such as a line over its
    8,190-byte limit) become one INFO line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and record.name.startswith("aiohttp."):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            message = f"{message}: {type(error).__name__}: {error}"
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "instance": getattr(record, "instance", None),
        }
        for key in ("conn", "request"):
            if getattr(record, key, None):
                line[key] = getattr(record, key)
        if record.exc_text:
            line["exc"] = record.exc_text
        elif record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """``<time> <level> <instance> <logger>: <message> [conn=... request=...]``, then the
    traceback if any: every record names the instance that wrote it (several instances
    often log to one place), and its connection or request when there is one."""

    FORMAT = "%(asctime)s %(levelname)s %(instance)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "instance", None):  # a handler without the ContextFilter
            record.instance = "-"
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # tags go on the message line, before any traceback
        text = super().formatMessage(record)
        tags = [f"{k}={getattr(record, k)}" for k in ("conn", "request") if getattr(record, k, None)]
        return f"{text} [{' '.join(tags)}]" if tags else text


def configure_logging(level: str, *, fmt: str = "text", instance: str = "") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter(instance))
    handler.addFilter(Redact())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # python-socketio/engineio log every packet at INFO when given a logger; keep them quiet
    logging.getLogger("engineio.server").setLevel(logging.WARNING)
    logging.getLogger("socketio.server").setLevel(logging.WARNING)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            request.path,  # path only: the query may hold a token
            response.status,
            time * 1000,
        )
