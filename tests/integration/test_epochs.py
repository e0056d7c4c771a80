"""Positions are (epoch, seq): a seq from another history is never recovered from this one.

Real server processes; the restore test plays an operator restoring a backup of
the embedded SQLite store and running ``python -m server reset-epoch``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.support.clients import Recorder, call, connect, publish_many
from tests.support.servers import REPO_ROOT, ServerFactory, ServerProcess, make_token

CHANNEL = "chat:epoch"


def token(sub: str = "alice") -> str:
    return make_token(sub, channels=["chat:*"])


async def publish(client: socketio.AsyncClient, count: int, tag: str) -> list[int]:
    return await publish_many(client, CHANNEL, count, tag)


async def resubscribe(server: ServerProcess, position: dict[str, Any]) -> tuple[dict[str, Any], Recorder, socketio.AsyncClient]:
    client, rec = await connect(server.url, token("late"))
    ack = await call(client, "subscribe", {"channel": CHANNEL, **position})
    assert ack["ok"], ack
    return ack, rec, client


async def test_subscribe_recovers_a_position_of_its_epoch_only(cluster: ServerFactory) -> None:
    a, b = await cluster.start(), await cluster.start()
    watcher, seen = await connect(a.url, token())
    first = await call(watcher, "subscribe", {"channel": CHANNEL})  # the channel has no history yet
    epoch = first["epoch"]
    assert first["ok"] and first["head"] == 0 and epoch
    await publish(watcher, 5, "one")
    await seen.wait_for_seq(CHANNEL, 5)

    same, rec, c1 = await resubscribe(b, {"since": 2, "epoch": epoch})
    assert (same["recovered"], same["head"], same["epoch"]) == (True, 5, epoch)
    await rec.wait_for_seq(CHANNEL, 5)
    assert rec.seqs(CHANNEL) == [3, 4, 5]

    other, stranger, c2 = await resubscribe(b, {"since": 2, "epoch": "0123456789ab"})
    assert (other["recovered"], other["head"], other["epoch"]) == (False, 5, epoch)

    legacy, old_client, c3 = await resubscribe(a, {"since": 2})  # no epoch: trusted as before
    assert (legacy["recovered"], legacy["epoch"]) == (True, epoch)
    await old_client.wait_for_seq(CHANNEL, 5)
    assert old_client.seqs(CHANNEL) == [3, 4, 5]

    fresh, everything, c4 = await resubscribe(a, {"since": 0, "epoch": "0123456789ab"})  # saw nothing
    assert fresh["recovered"] is True
    await everything.wait_for_seq(CHANNEL, 5)

    await publish(watcher, 1, "live")  # the mismatched subscriber still gets live events
    await stranger.wait_for_seq(CHANNEL, 6)
    assert stranger.seqs(CHANNEL) == [6]  # and nothing of the history it did not know
    assert everything.seqs(CHANNEL) == [1, 2, 3, 4, 5, 6]
    history = await call(c1, "history", {"channel": CHANNEL, "after": 4})
    assert history["ok"] and history["epoch"] == epoch and [e["seq"] for e in history["events"]] == [5, 6]
    for client in (watcher, c1, c2, c3, c4):
        await client.disconnect()


async def test_rest_history_and_sync_answer_the_epoch_and_check_it(cluster: ServerFactory) -> None:
    server = await cluster.start()
    publisher, _ = await connect(server.url, token("pub"))
    await publish(publisher, 6, "x")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as http:
        async with http.get(f"{server.url}/api/v1/channels/{CHANNEL}/events", params={"after": "0"}) as r:
            page = await r.json()
        assert r.status == 200
        epoch = page["epoch"]
        assert epoch and page["head"] == 6

        async def sync(body: dict[str, Any]) -> tuple[int, Any]:
            async with http.post(f"{server.url}/api/v1/sync", json=body) as r:
                return r.status, await r.json()

        status, same = await sync({"channels": {CHANNEL: 4}, "epochs": {CHANNEL: epoch}})
        assert status == 200
        answer = same["channels"][CHANNEL]
        assert {k: v for k, v in answer.items() if k != "events"} == {
            "head": 6, "recovered": True, "has_more": False, "epoch": epoch}
        assert [e["seq"] for e in answer["events"]] == [5, 6]

        status, other = await sync({"channels": {CHANNEL: 4, "chat:none": 0}, "epochs": {CHANNEL: "elsewhere"}})
        assert status == 200
        answer = other["channels"][CHANNEL]
        assert (answer["recovered"], answer["epoch"]) == (False, epoch)
        assert [e["seq"] for e in answer["events"]] == [1, 2, 3, 4, 5, 6]  # start over: all of this history
        assert other["channels"]["chat:none"]["epoch"] == ""

        status, legacy = await sync({"channels": {CHANNEL: 4}})
        assert (status, legacy["channels"][CHANNEL]["recovered"]) == (200, True)
        assert legacy["channels"][CHANNEL]["epoch"] == epoch

        # an epoch without a position pairs with nothing: ignored (the document cannot say
        # "keys of epochs among the keys of channels", so the server does not demand it)
        status, extra = await sync({"channels": {CHANNEL: 4}, "epochs": {"chat:else": "elsewhere"}})
        assert status == 200 and list(extra["channels"]) == [CHANNEL] and extra["channels"][CHANNEL]["recovered"]
    await publisher.disconnect()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO_ROOT, env={**full_env, **env},
                          capture_output=True, text=True, timeout=60)


async def test_after_restoring_a_backup_and_reset_epoch_no_old_position_is_recovered(
    embedded: ServerFactory, tmp_path: Path
) -> None:
    """The history after the backup is lost; new events take its seqs. A client that
    saw the lost events must be told ``recovered: false``, not sent the new ones."""
    db = tmp_path / "sb.db"
    server = await embedded.start()
    client, rec = await connect(server.url, token())
    await call(client, "subscribe", {"channel": CHANNEL})
    await publish(client, 3, "kept")
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # the operator's nightly backup
    await publish(client, 5, "lost")
    await rec.wait_for_seq(CHANNEL, 8)
    sub = await call(client, "subscribe", {"channel": CHANNEL})
    position = {"since": 8, "epoch": sub["epoch"]}
    await client.disconnect()
    await embedded.astop_all()

    for suffix in ("", "-wal", "-shm"):  # the disk is lost; the backup comes back
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)
    reset = run_cli("reset-epoch", "--all", env={"SWITCHBOARD_DATABASE_URL": f"sqlite:///{db}"})
    assert reset.returncode == 0 and "new epoch for 1 channel" in reset.stdout, reset.stdout + reset.stderr

    server = await embedded.start()
    writer, _ = await connect(server.url, token("pub"))
    assert await publish(writer, 6, "new") == [4, 5, 6, 7, 8, 9]  # seqs 4..8 again, other events
    ack, late, again = await resubscribe(server, position)
    assert (ack["recovered"], ack["head"]) == (False, 9) and ack["epoch"] != position["epoch"]
    await publish(writer, 1, "live")
    await late.wait_for_seq(CHANNEL, 10)
    assert late.seqs(CHANNEL) == [10]  # nothing of the new history passed off as the lost one
    for c in (writer, again):
        await c.disconnect()
