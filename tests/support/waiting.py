"""Waiting for a condition instead of sleeping a fixed time.

CI runs the suite on two cores shared with PostgreSQL, Redis and the servers
under test, so "long enough" is never a fixed number of milliseconds: a test
waits for what it needs to see, with a timeout that only bounds a hang.
``LOADED`` is that bound for things that take milliseconds on an idle machine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

LOADED = 20.0  # seconds: generous for a loaded box, short enough to fail a hang before pytest-timeout
POLL = 0.01


async def eventually(
    check: Callable[[], Any],
    timeout: float = LOADED,
    what: str = "condition",
    interval: float = POLL,
) -> Any:
    """Poll ``check()`` (plain or async) until it returns a truthy value, and return that value.

    ``check`` may also raise ``AssertionError`` to mean "not yet" (so plain asserts
    can serve as the condition). After ``timeout`` seconds this raises
    ``AssertionError`` naming ``what`` and the last assertion message, if any.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f": {last}" if last is not None and str(last) else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}") from last
        await asyncio.sleep(interval)


async def elapsed_until(check: Callable[[], object], timeout: float = LOADED, what: str = "condition") -> float:
    """``eventually`` for a plain condition, returning the seconds it took."""
    started = time.monotonic()
    await eventually(check, timeout, what)
    return time.monotonic() - started
