"""The load tester against a real Switchboard process: every scenario, briefly, must come out clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from loadtest.cli import execute, main
from loadtest.coordinator import RunFailed
from loadtest.spec import RunSpec
from loadtest.tokens import TokenSpec
from tests.support.servers import TEST_SECRET, ServerFactory, ServerProcess, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One embedded instance (SQLite + in-memory broker) shared by this module's runs."""
    workdir = tmp_path_factory.mktemp("loadtest")
    factory = ServerFactory(workdir, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{workdir / 'sb.db'}",
                                      "SWITCHBOARD_REDIS_URL": "memory://", "SWITCHBOARD_LOG_LEVEL": "WARNING"})
    yield factory.start_sync()
    factory.stop_all()


def spec(server: ServerProcess, scenario: str, **options: Any) -> RunSpec:
    tokens = TokenSpec(secret=TEST_SECRET, channels=("lt:*",))
    base: dict[str, Any] = {"ramp": 0, "connect_timeout": 10, "ack_timeout": 10, "drain_timeout": 10,
                            "channel_prefix": "lt:"}
    return RunSpec(scenario=scenario, urls=(server.url,), tokens=tokens, **{**base, **options})  # type: ignore[arg-type]


async def run(s: RunSpec) -> dict[str, Any]:
    return await execute(s, Console(quiet=True), quiet=True)


def assert_clean(doc: dict[str, Any]) -> None:
    integrity = doc["integrity"]
    assert (integrity["loss"], integrity["duplicates"], integrity["order_violations"]) == (0, 0, 0), integrity
    assert doc["problems"] == [], doc["problems"]


async def test_connect_holds_every_client(server: ServerProcess) -> None:
    doc = await run(spec(server, "connect", clients=40, duration=1))
    assert_clean(doc)
    conns = doc["connections"]
    assert conns["connects"] == 40 and conns["peak"] == 40 and not conns["disconnects"]
    assert conns["latency_ms"]["count"] == 40 and conns["time_to_all_connected_s"] is not None


async def test_fanout_over_two_workers_delivers_every_seq_once_in_order(server: ServerProcess) -> None:
    doc = await run(spec(server, "fanout", procs=2, clients=30, channels=3, publishers=3, events=300, duration=20))
    assert_clean(doc)
    assert doc["publish"]["acked"] == 300
    assert doc["delivery"]["deliveries"] == 300 * 10  # every event of a channel to its 10 subscribers
    per_channel = doc["integrity"]["per_channel"]
    assert len(per_channel) == 3 and all(c["head"] == 100 and c["subscriptions"] == 10 for c in per_channel.values())
    assert doc["delivery"]["latency_ms"]["count"] == 3000 and doc["delivery"]["per_s"] > 0


async def test_churn_recovers_with_since_without_gap_or_duplicate(server: ServerProcess) -> None:
    doc = await run(spec(server, "churn", clients=30, channels=2, publishers=2, rate=150, duration=3,
                         churn_fraction=0.3, churn_interval=0.5, churn_offline=0.2))
    assert_clean(doc)
    assert doc["recovery"]["reconnects"] >= 10 and doc["recovery"]["not_recovered"] == 0
    assert doc["integrity"]["subscriptions"] == 30


async def test_reconnect_storm_everyone_recovers(server: ServerProcess) -> None:
    doc = await run(spec(server, "churn", storm=True, clients=40, channels=2, publishers=2, rate=150, duration=3,
                         churn_offline=0.3))
    assert_clean(doc)
    storm = doc["recovery"]["storm"]
    assert storm["clients"] == 40 and storm["recovered"] == 40 and storm["time_to_all_recovered_s"] > 0


async def test_rest_sync_and_history_pages_are_contiguous(server: ServerProcess) -> None:
    doc = await run(spec(server, "rest", channels=3, rest_prefill=30, rest_concurrency=6, duration=1.5))
    assert_clean(doc)
    assert doc["rest"]["requests"] > 20 and set(doc["rest"]["statuses"]) == {"200"}
    assert doc["rest"]["bad_pages"] == 0


async def test_bad_setups_fail_with_a_reason(server: ServerProcess) -> None:
    wrong = spec(server, "connect", clients=5)
    wrong = RunSpec(**{**wrong.__dict__, "tokens": TokenSpec(secret="not-the-secret-0123456789abcdef0123")})
    with pytest.raises(RunFailed, match="invalid_token"):
        await run(wrong)
    closed = RunSpec(**{**wrong.__dict__, "urls": (f"http://127.0.0.1:{free_port()}",)})
    with pytest.raises(RunFailed, match="connection_refused"):
        await run(closed)


def test_cli_writes_json_and_report_and_exits_by_outcome(server: ServerProcess, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--scenario", "fanout", "--url", server.url, "--secret", TEST_SECRET, "--channel-prefix", "lt:",
            "--clients", "20", "--publishers", "2", "--events", "100", "--duration", "10", "--ramp", "0",
            "--json", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.html")]
    assert main(args) == 0
    assert (tmp_path / "r.json").stat().st_size > 0
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "Publish → receive latency" in html
    assert "clean run" in capsys.readouterr().out
    assert main(["--scenario", "connect", "--url", server.url, "--secret", "wrong-secret-0123456789abcdef0123",
                 "--quiet"]) == 2
    assert "invalid_token" in capsys.readouterr().out
