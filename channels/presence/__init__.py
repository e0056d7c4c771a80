"""Presence adapters, chosen by URL scheme (the same URL as the broker)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..ports import Presence
from .memory import MemoryPresence, MemoryPresenceHub

__all__ = ["MemoryPresence", "MemoryPresenceHub", "open_presence"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def open_presence(url: str, *, prefix: str = "switchboard:", timeout: float = 60.0) -> Presence:
    """Build the presence adapter ``url`` names; call ``start()`` on it before use.

    ``redis://``, ``rediss://`` and ``unix://`` give a ``RedisPresence`` (keys under
    ``prefix + "pr:"``); ``memory://`` a ``MemoryPresence`` of its own (one process).
    A killed instance's members disappear within ``timeout`` seconds.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in _REDIS_SCHEMES:
        from .redis import RedisPresence

        return RedisPresence(url, prefix=prefix, timeout=timeout)
    if scheme == "memory":
        return MemoryPresence(timeout=timeout)
    raise ValueError(
        f"unsupported presence URL scheme {scheme!r}: use redis://, rediss://, unix:// or memory://"
    )
