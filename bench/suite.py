"""Run scenarios against targets: start the servers, drive the load tester, sample CPU, keep the results.

Each (scenario, target) pair gets freshly started servers, one
``python -m loadtest ... --json`` subprocess (the exact command is recorded),
a CPU/RSS sample every half second, and its servers stopped afterwards.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .procstat import Sampler, listen_overflows
from .profile import Profiler, summarize
from .scenarios import Scenario
from .targets import ROOT, SECRET, Target

RUN_TIMEOUT = 600


@dataclass
class Record:
    """What one (scenario, target) run produced."""

    scenario: Scenario
    target: str
    label: str
    command: str
    exit_code: int
    doc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_base: int = 0
    rss_peak: int = 0
    listen_overflows: int = 0  # connects the kernel dropped because a server's accept queue was full
    profile: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.doc)


def loadtest_argv(scenario: Scenario, urls: list[str], out: Path) -> list[str]:
    argv = [sys.executable, "-m", "loadtest", *scenario.args, "--channel-prefix", "bench:"]
    for url in urls:
        argv += ["--url", url]
    return [*argv, "--secret", SECRET, "--json", str(out / "result.json"), "--report", str(out / "report.html")]


def _printable(argv: list[str], out: Path) -> str:
    """The command as a reader would type it: no interpreter path, no secret, short output names."""
    shown = ["python" if a == sys.executable else "$SECRET" if a == SECRET else a.replace(f"{out}/", "")
             for a in argv]
    return shlex.join(shown).replace("'$SECRET'", '"$SECRET"')


def _abs(doc: dict[str, Any], phase: str) -> float | None:
    rel = doc.get("phases", {}).get(phase)
    return doc["started_at"] + rel if rel is not None else None


def run_one(scenario: Scenario, target: Target, outdir: Path, profile_seconds: float = 0) -> Record:
    out = outdir / f"{scenario.key}-{target.name}"
    out.mkdir(parents=True, exist_ok=True)
    urls = target.start(scenario.instances)
    try:
        sampler = Sampler(target.pids)
        for _ in range(3):
            sampler.sample()
            time.sleep(0.3)
        argv = loadtest_argv(scenario, urls, out)
        overflows = listen_overflows()
        with (out / "loadtest.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "COLUMNS": "160"})
            sampler.loadtest_pid = proc.pid
            profiler = Profiler(target.pids[0], out, profile_seconds) if profile_seconds else None
            deadline = time.monotonic() + RUN_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                sampler.sample()
                if profiler is not None:
                    profiler.poll()
                time.sleep(0.5)
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
        label = scenario.title.split(":")[0] if scenario.key.startswith("C") else target.label
        record = Record(scenario, target.name, label, _printable(argv, out), code,
                        listen_overflows=listen_overflows() - overflows)
        if profiler is not None:
            record.profile = profiler.finish()
        result = out / "result.json"
        if result.exists():
            record.doc = orjson.loads(result.read_bytes())
            _measure(record, sampler)
        save(record, out)
        return record
    finally:
        target.stop()


def _measure(record: Record, sampler: Sampler) -> None:
    doc = record.doc
    start, end = (_abs(doc, p) for p in record.scenario.window)
    if start is not None and end is not None:
        record.cpu = sampler.window(start, end)
    ramp = _abs(doc, "ramp_start")
    if ramp is not None:
        record.rss_base = sampler.rss_at(ramp - 0.5)
    hold_start, hold_end = _abs(doc, "hold_start"), _abs(doc, "hold_end")
    if hold_start is not None and hold_end is not None:
        record.rss_peak = sampler.rss_max(hold_start, hold_end)


def save(record: Record, out: Path) -> None:
    """Keep what the sampler measured beside result.json, so the tables can be rendered again."""
    kept = {"scenario": record.scenario.key, "target": record.target, "label": record.label,
            "command": record.command, "exit_code": record.exit_code, "cpu": record.cpu,
            "rss_base": record.rss_base, "rss_peak": record.rss_peak, "profile": record.profile,
            "listen_overflows": record.listen_overflows}
    (out / "record.json").write_bytes(orjson.dumps(kept))


def load(out: Path, scenarios: dict[str, Scenario]) -> Record | None:
    """A record saved by ``save`` (with its result.json), or None."""
    path = out / "record.json"
    if not path.exists():
        return None
    kept = orjson.loads(path.read_bytes())
    scenario = scenarios[kept.pop("scenario")]
    record = Record(scenario, **kept)
    if (out / "profile.raw").exists():
        record.profile = summarize(out / "profile.raw")
    result = out / "result.json"
    if result.exists():
        record.doc = orjson.loads(result.read_bytes())
    return record


def summary_line(record: Record) -> str:
    if not record.ok:
        return f"{record.scenario.key} {record.label}: no result (exit {record.exit_code})"
    doc = record.doc
    parts = [f"{record.scenario.key} {record.label}:"]
    if doc["delivery"]["deliveries"]:
        parts.append(f"{doc['delivery']['per_s']:,.0f} deliveries/s")
    if doc["publish"]["acked"]:
        parts.append(f"{doc['publish']['acked_per_s']:,.0f} acks/s")
    parts.append(f"{doc['connections']['peak']:,} conns")
    parts.append("clean" if not doc["problems"] else "; ".join(doc["problems"]))
    return " ".join(parts)
