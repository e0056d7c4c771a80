from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.services import REDIS_URL, check_redis, create_postgres_database, unique_prefix


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """URL of a PostgreSQL database created for this test and dropped after it."""
    async for url in create_postgres_database():
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file in this test's temporary directory."""
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
async def redis_url() -> str:
    """URL of the test Redis (checked reachable)."""
    await check_redis()
    return REDIS_URL


@pytest.fixture
def key_prefix() -> str:
    """A Redis key/channel prefix no other test run uses."""
    return unique_prefix()
