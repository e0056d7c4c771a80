"""Event stores, chosen by URL, and the group-commit writer in front of them.

``open_store("postgresql://...")`` or ``open_store("sqlite:///switchboard-data/events.db")``;
drivers are imported only for the scheme in use. To inject a ready asyncpg pool
or aiosqlite connection, build ``PostgresEventStore(pool=...)`` or
``SqliteEventStore(connection=...)`` directly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..ports import EventStore
from .writer import GroupCommitWriter

__all__ = ["EventStore", "GroupCommitWriter", "open_store", "sqlite_path"]


def open_store(url: str, **opts: Any) -> EventStore:
    """An unstarted ``EventStore`` for ``url``; ``opts`` go to the adapter's constructor.

    ``postgresql://`` and ``postgres://`` give a ``PostgresEventStore``;
    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` and
    ``sqlite:///:memory:`` a ``SqliteEventStore``. Any other scheme is a ``ValueError``.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresEventStore

        return PostgresEventStore(url, **opts)
    if scheme == "sqlite":
        from .sqlite import SqliteEventStore

        return SqliteEventStore(sqlite_path(url), **opts)
    raise ValueError(
        f"unsupported event store URL scheme {scheme!r} "
        "(expected postgresql://, postgres:// or sqlite://)"
    )


def sqlite_path(url: str) -> str:
    """The file named by ``sqlite:///rel.db``, ``sqlite:////abs.db`` or ``sqlite:///:memory:``."""
    prefix = "sqlite://"
    rest = url[len(prefix) :] if url.lower().startswith(prefix) else ""
    # the path starts after the third slash; a fourth makes it absolute
    path = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if not path:
        raise ValueError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    return path
