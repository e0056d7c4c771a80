"""Writes docs/BENCHMARKS.md from the suite's records: machine, versions, commands, tables, ratios."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import psutil  # type: ignore[import-untyped]

from .procstat import GROUPS
from .suite import Record
from .targets import NODE_PEER, ROOT

PEERS = """\
**Peers** speak Switchboard's wire API (connect with `auth: {token}`, `subscribe` -> `{ok, channel, head}`,
`publish` -> `{ok, seq}`, `event` broadcast to the channel's room), so the same load tester drives all three:

* **python-socketio peer** (`bench/peers/sio_peer.py`): what a user writes from python-socketio's docs,
  `AsyncServer` on aiohttp with `AsyncRedisManager`, stdlib `json`, asyncio's default loop.
* **Node Socket.IO peer** (`bench/node-peer/server.js`): Socket.IO 4 with `@socket.io/redis-adapter`.

Both verify the HS256 JWT with the shared secret on connect (as Switchboard does) and number events with a
Redis `INCR` per channel (the honest equivalent of Switchboard's per-channel `seq` across instances).
**The peers persist nothing; Switchboard commits every event to PostgreSQL before it acks or delivers it.**
Peers cannot replay missed events (`since`), so S6 is Switchboard-only. Ratios say how many times better
Switchboard is (above 1: Switchboard is better): Switchboard / peer for throughput, peer / Switchboard for
the p99 latency of the fixed-rate scenarios (S2r, S5r), where lower is better."""


PROFILE_NOTE = ("`py-spy record` of the (first) server process, 100 Hz, during the S2 run; each busy sample is "
                "charged to the innermost frame outside the standard library (see bench/profile.py).")


def _n(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "–"
    return f"{value:,.{digits}f}"


def _cmd(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _node_version(package: str) -> str:
    try:
        return str(json.loads((NODE_PEER / "node_modules" / package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    head = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = " + uncommitted changes" if _cmd(["git", "-C", str(ROOT), "status", "--porcelain"]) else ""
    node_pkgs = ", ".join(f"{p} {_node_version(p)}" for p in ("socket.io", "@socket.io/redis-adapter", "redis"))
    py = ", ".join(f"{d} {_version(d)}" for d in ("python-socketio", "python-engineio", "aiohttp", "uvloop", "orjson",
                                                  "asyncpg", "redis", "PyJWT"))
    return "\n".join([
        f"* CPU: {psutil.cpu_count()} × {cpu}; memory {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"{platform.system()} {platform.release()}",
        f"* Python {platform.python_version()} ({py})",
        f"* {_cmd(['psql', '--version'])}; {_cmd(['redis-server', '--version']).split(' sha=')[0]}; "
        f"Node {_cmd(['node', '--version'])} ({node_pkgs})",
        f"* Switchboard at git {head}{dirty}",
        f"* Load average (1, 5, 15 min) when this file was written: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}",
    ])


def _cpu(record: Record) -> str:
    return " / ".join(_n(record.cpu.get(g)) for g in GROUPS) if record.cpu else "–"


CPU_HEAD = "CPU % server / postgres / redis / loadtest / other"


def _integrity(doc: dict[str, Any]) -> str:
    i = doc["integrity"]
    return f"{i['loss']} / {i['duplicates']} / {i['order_violations']}"


def _connect_row(r: Record) -> list[str]:
    c, doc = r.doc["connections"], r.doc
    per_conn = (r.rss_peak - r.rss_base) / c["peak"] / 1024 if c["peak"] and r.rss_peak else math.nan
    return [r.label, _n(c["peak"]), _n(c["connect_per_s"]), f"{_n(c['latency_ms']['p50'], 1)} / "
            f"{_n(c['latency_ms']['p99'], 1)}", str(sum(c["failures"].values())),
            f"{_n(r.rss_base / 2**20)} → {_n(r.rss_peak / 2**20)}", _n(per_conn, 1),
            _n(r.listen_overflows), " ".join(f"{w['cpu_pct']:.0f}%" for w in doc["workers"]), _cpu(r)]


def _fanout_row(r: Record) -> list[str]:
    d, p = r.doc["delivery"], r.doc["publish"]
    lat = d["latency_ms"]
    return [r.label, _n(d["per_s"]), _n(p["acked_per_s"]), f"{_n(lat['p50'], 1)} / {_n(lat['p99'], 1)} / "
            f"{_n(lat['max'], 1)}", _integrity(r.doc), str(sum(p["failures"].values())), _cpu(r)]


def _publish_row(r: Record) -> list[str]:
    p = r.doc["publish"]
    return [r.label, _n(p["acked_per_s"]), f"{_n(p['ack_latency_ms']['p50'], 1)} / {_n(p['ack_latency_ms']['p99'], 1)}",
            _n(p["acked"]), str(sum(p["failures"].values())), _cpu(r)]


def _storm_row(r: Record) -> list[str]:
    rec, storm = r.doc["recovery"], r.doc["recovery"]["storm"]
    return [r.label, f"{storm.get('recovered', 0):,} / {storm.get('clients', 0):,}",
            _n(storm.get("time_to_all_recovered_s"), 2), f"{_n(rec['latency_ms']['p50'])} / "
            f"{_n(rec['latency_ms']['p99'])}", str(rec["not_recovered"]), _integrity(r.doc),
            _n(r.listen_overflows), _n(r.doc["delivery"]["per_s"]), _cpu(r)]


KINDS: dict[str, tuple[list[str], Callable[[Record], list[str]]]] = {
    "connect": (["Server", "Held", "Connects/s", "Connect p50 / p99 ms", "Failed", "Server RSS MiB",
                 "RSS KiB / conn", "Accept-queue drops", "Tester CPU", CPU_HEAD], _connect_row),
    "fanout": (["Server", "Deliveries/s", "Acked/s", "Latency p50 / p99 / max ms", "Loss / dup / order",
                "Publish failures", CPU_HEAD], _fanout_row),
    "publish": (["Server", "Acked publishes/s", "Ack p50 / p99 ms", "Acked", "Failures", CPU_HEAD], _publish_row),
    "storm": (["Server", "Recovered", "Time to all recovered s", "Recovery p50 / p99 ms", "Not recovered",
               "Loss / dup / order", "Accept-queue drops", "Deliveries/s", CPU_HEAD], _storm_row),
}


def kind(record: Record) -> str:
    args = record.scenario.args
    if "connect" in args:
        return "connect"
    if "--storm" in args:
        return "storm"
    return "publish" if args[args.index("--clients") + 1] == "0" else "fanout"


def _table(records: list[Record]) -> list[str]:
    head, row = KINDS[kind(records[0])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        lines.append("| " + " | ".join(row(r) if r.ok else [r.label, f"no result (exit {r.exit_code})"]
                                       + [""] * (len(head) - 2)) + " |")
    return lines


def _client_table(records: list[Record]) -> list[str]:
    """C1/C2: what one worker process spends per connection and per delivery, by client."""
    lines = ["| Client | Connections | Deliveries/s | Tester CPU s | CPU ms / connection | CPU µs / delivery | "
             "Tester peak RSS MiB | Loss / dup / order |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        if not r.ok:
            continue
        doc, worker = r.doc, r.doc["workers"][0]
        conns, deliveries = doc["connections"]["connects"], doc["delivery"]["deliveries"]
        lines.append(f"| {r.label} | {_n(conns)} | {_n(doc['delivery']['per_s'])} | {_n(worker['cpu_s'], 1)} | "
                     f"{_n(1000 * worker['cpu_s'] / conns if conns and not deliveries else math.nan, 2)} | "
                     f"{_n(1e6 * worker['cpu_s'] / deliveries if deliveries else math.nan, 1)} | "
                     f"{_n(worker['max_rss_mb'])} | {_integrity(doc)} |")
    return lines


LATENCY_HEADLINES = ("ack p99 ms", "delivery p99 ms")  # lower is better: ratios are peer / Switchboard


def headline(record: Record) -> tuple[str, float]:
    k, doc = kind(record), record.doc
    if not record.ok:
        return "", math.nan
    if "--rate" in record.scenario.args and k == "publish":
        return "ack p99 ms", float(doc["publish"]["ack_latency_ms"]["p99"])
    if "--rate" in record.scenario.args and k == "fanout":
        return "delivery p99 ms", float(doc["delivery"]["latency_ms"]["p99"])
    if k == "connect":
        return "connections held", float(doc["connections"]["peak"])
    if k == "publish":
        return "acked publishes/s", float(doc["publish"]["acked_per_s"] or math.nan)
    if k == "storm":
        return "s to all recovered", float(doc["recovery"]["storm"].get("time_to_all_recovered_s") or math.nan)
    return "deliveries/s", float(doc["delivery"]["per_s"] or math.nan)


def _ratio(metric: str, ours: float, theirs: float) -> str:
    """How many times better Switchboard is (above 1: better): for latency, theirs / ours."""
    if not theirs or math.isnan(theirs) or math.isnan(ours) or metric == "s to all recovered":
        return "–"
    return _n(theirs / ours if metric in LATENCY_HEADLINES else ours / theirs, 2) + "×"


def render(groups: dict[str, list[Record]], command: str, elapsed: float, profiles: dict[str, str]) -> str:
    out = ["# Benchmarks", "",
           f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} ({elapsed / 60:.1f} minutes); rerun it "
           "rather than editing this file. Every number comes from one run on the machine below, with the load "
           "tester, the servers, PostgreSQL and Redis sharing its two cores: read the CPU columns to see who was "
           "the bottleneck. `other` is busy CPU outside the benchmark (this machine is shared with other work); where "
           "it is high, every number in that row is lower than a quiet machine would give, and runs of the suite "
           "differ by 10-30 % for that reason.", "", "## Machine", "", machine(), "", "## Peers", "", PEERS, "", "## Summary", "",
           "| Scenario | Metric | Switchboard | python-socketio peer | Node peer | vs python-socketio | vs Node |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for key, records in groups.items():
        if key.startswith("C"):
            continue
        by = {r.target: r for r in records}
        metric, sb = headline(by["switchboard"]) if "switchboard" in by else ("", math.nan)
        vals = {t: headline(by[t])[1] if t in by else math.nan for t in ("sio", "node")}
        ratios = [_ratio(metric, sb, v) for v in vals.values()]
        digits = 2 if metric.startswith("s ") else 1 if metric in LATENCY_HEADLINES else 0
        out.append(f"| {key} | {metric} | {_n(sb, digits)} | {_n(vals['sio'], digits)} | "
                   f"{_n(vals['node'], digits)} | {ratios[0]} | {ratios[1]} |")
    for key, records in groups.items():
        scenario = records[0].scenario
        out += ["", f"## {key}: {scenario.title}", ""]
        if scenario.note:
            out += [f"*{scenario.note}.*", ""]
        out += _client_table(records) if key.startswith("C") else _table(records)
        out += ["", "Commands (servers started by the suite; `$SECRET` is their JWT secret):", "", "```"]
        out += [r.command for r in records] + ["```"]
        problems = [f"* {r.label}: " + "; ".join(r.doc["problems"]) for r in records if r.ok and r.doc["problems"]]
        if problems:
            out += ["", "Problems reported by the load tester:", "", *problems]
    for label, profile in profiles.items():
        out += ["", f"## Where the time goes under S2: {label}", "", PROFILE_NOTE, "", profile]
    return "\n".join(out) + "\n"
