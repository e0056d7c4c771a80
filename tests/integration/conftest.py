from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.servers import ServerFactory


@pytest.fixture
def cluster_env(postgres_url: str, redis_url: str, key_prefix: str) -> dict[str, str]:
    """Settings shared by every instance of one test: its own database and Redis prefix."""
    return {
        "SWITCHBOARD_DATABASE_URL": postgres_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_REDIS_PREFIX": key_prefix,
    }


@pytest.fixture
async def cluster(tmp_path: Path, cluster_env: dict[str, str]) -> AsyncIterator[ServerFactory]:
    """Start instances on PostgreSQL + Redis with ``await cluster.start()``; all stopped afterwards."""
    factory = ServerFactory(tmp_path, cluster_env)
    yield factory
    await factory.astop_all()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Instances on the embedded defaults: SQLite file store, in-memory broker."""
    factory = ServerFactory(tmp_path, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'sb.db'}",
                                       "SWITCHBOARD_REDIS_URL": "memory://"})
    yield factory
    await factory.astop_all()
