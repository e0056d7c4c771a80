"""Log lines say which instance wrote them, and error lines say what failed and why."""

from __future__ import annotations

import logging
import sys

import pytest

from channels.errors import PresenceUnavailable, describe
from channels.presence import MemoryPresence
from handlers.context import connection_id
from server.logs import ContextFilter, TextFormatter


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    record = logging.LogRecord("channels.presence", logging.WARNING, __file__, 1, msg, args, exc_info)
    ContextFilter("host-a-4242").filter(record)
    return record


def test_every_text_line_names_the_instance() -> None:
    line = TextFormatter().format(_record("presence heartbeat failed: %s", "TimeoutError"))
    assert " WARNING host-a-4242 channels.presence: presence heartbeat failed: TimeoutError" in line
    assert "[" not in line  # no connection or request: no tag block


def test_text_tags_stay_on_the_message_line_before_the_traceback() -> None:
    token = connection_id.set("conn-9")
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            record = _record("listener failed", exc=True)
    finally:
        connection_id.reset(token)
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("host-a-4242 channels.presence: listener failed [conn=conn-9]")
    assert rest[0].startswith("Traceback") and rest[-1] == "TimeoutError"


def test_a_record_without_the_context_filter_still_formats() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert TextFormatter().format(record).endswith("INFO - x: hello")


def test_describe_names_the_exception_when_its_message_is_empty() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ConnectionError("  ")) == "ConnectionError"
    assert describe(OSError("Connection refused")) == "OSError: Connection refused"


@pytest.mark.parametrize(("error", "reason"), [
    (TimeoutError(), "TimeoutError"),
    (ConnectionError("Error 111 connecting to 127.0.0.1:1"), "ConnectionError: Error 111 connecting to 127.0.0.1:1"),
])
async def test_a_presence_error_says_what_failed_and_why(error: Exception, reason: str) -> None:
    async def failing() -> None:
        raise error

    with pytest.raises(PresenceUnavailable) as caught:
        await MemoryPresence()._guard(failing())
    assert caught.value.message == f"presence backend unavailable: {reason}"
