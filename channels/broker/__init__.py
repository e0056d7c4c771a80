"""The broker adapters, chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..ports import Broker
from .memory import MemoryBroker, MemoryHub

__all__ = ["MemoryBroker", "MemoryHub", "open_broker"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def open_broker(url: str, *, prefix: str = "switchboard:") -> Broker:
    """Build the broker ``url`` names; call ``start()`` on it before use.

    ``redis://``, ``rediss://`` and ``unix://`` give a ``RedisBroker`` (redis-py
    is imported only then); ``memory://`` gives a ``MemoryBroker`` with a hub
    of its own, i.e. a single-instance deployment.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in _REDIS_SCHEMES:
        from .redis import RedisBroker

        return RedisBroker(url, prefix=prefix)
    if scheme == "memory":
        return MemoryBroker(prefix=prefix)
    # The URL itself is left out: it may carry a password.
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r}: use redis://, rediss://, unix:// or memory://"
    )
