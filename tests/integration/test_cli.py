"""``python -m server`` as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from channels.models import Principal
from server.auth import TokenVerifier
from server.config import load_settings
from tests.support.servers import REPO_ROOT

SECRET = "cli-test-secret-cli-test-secret-0123"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_") and k != "PORT"}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60)


async def test_migrate_creates_the_schema_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, SWITCHBOARD_DATABASE_URL=postgres_url)
    assert result.returncode == 0, result.stderr
    again = run_cli("migrate", cwd=tmp_path, SWITCHBOARD_DATABASE_URL=postgres_url)
    assert again.returncode == 0, again.stderr  # idempotent
    conn = await asyncpg.connect(postgres_url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert {"channels", "events", "schema_migrations"} <= tables


def test_token_command_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    result = run_cli("token", "--sub", "alice", "--ttl", "120", "--channels", "chat:*", "room:1",
                     "--role", "server", cwd=tmp_path, SWITCHBOARD_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    principal = TokenVerifier(load_settings(jwt_secret=SECRET)).verify(result.stdout.strip())
    assert principal == Principal("alice", ("chat:*", "room:1"), "server", principal.expires_at, {})


def test_development_token_matches_the_generated_secret(tmp_path: Path) -> None:
    result = run_cli("token", "--sub", "bob", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / ".switchboard-dev-secret").read_text().strip()
    assert TokenVerifier(load_settings(jwt_secret=secret)).verify(result.stdout.strip()).sub == "bob"


def test_production_without_a_key_refuses_to_start_and_names_the_setting(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, SWITCHBOARD_ENV="production")
    assert result.returncode == 2
    assert "SWITCHBOARD_JWT_SECRET" in result.stderr
    assert not (tmp_path / ".switchboard-dev-secret").exists()


def test_bad_settings_fail_with_a_readable_message(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, SWITCHBOARD_PORT="eighty", SWITCHBOARD_JWT_SECRET=SECRET)
    assert result.returncode == 2 and "port" in result.stderr.lower()
    result = run_cli("serve", cwd=tmp_path, SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_DATABASE_URL="mysql://x")
    assert result.returncode == 2 and "mysql" in result.stderr
    bad = tmp_path / "channels.toml"
    bad.write_text("[namespaces.chat]\npublsh = true\n")
    result = run_cli("serve", cwd=tmp_path, SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_CHANNELS_CONFIG=str(bad))
    assert result.returncode == 2 and "publsh" in result.stderr
