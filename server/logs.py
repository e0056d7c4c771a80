"""Logging: text or JSON lines, each carrying the instance and the connection or
request it is about, and an access logger that never writes query strings
(they may carry ``?token=``)."""

from __future__ import annotations

import logging
import traceback
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "instance": getattr(record, "instance", None),
        }
        for key in ("conn", "request"):
            if getattr(record, key, None):
                line[key] = getattr(record, key)
        if record.exc_info:
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
