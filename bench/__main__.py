"""``python -m bench``: start the servers, run the standard scenarios, write docs/BENCHMARKS.md.

    python -m bench                      # everything (about 15 minutes on 2 cores)
    python -m bench --only S2,S3         # some scenarios (BENCHMARKS.md is written from those only)
    python -m bench --quick --out /tmp/b.md   # a small smoke run of the suite itself
    python -m bench --profile 15         # also py-spy Switchboard and the python-socketio peer under S2

Needs PostgreSQL and Redis (BENCH_POSTGRES_URL, BENCH_REDIS_URL; defaults on
127.0.0.1), Node.js + npm for the Node peer (``npm ci`` runs on first use), and
``pip install -e '.[loadtest]'`` (rich, psutil, py-spy).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import orjson

from .markdown import render
from .scenarios import Scenario, client_comparison, standard
from .suite import Record, load, run_one, summary_line
from .targets import ROOT, Target, make_targets


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated scenario keys (S1..S6, S2r, C1, C2)")
    parser.add_argument("--targets", default="switchboard,sio,node", help="comma-separated: switchboard,sio,node")
    parser.add_argument("--quick", action="store_true", help="shrunken scenarios, to check the suite works")
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                        help="py-spy Switchboard and the python-socketio peer under S2 for this long")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--keep", type=Path, help="keep logs, JSON results and HTML reports here")
    parser.add_argument("--render-from", type=Path, metavar="DIR",
                        help="only write the markdown again from a kept directory of an earlier run")
    args = parser.parse_args()

    only = {k.strip() for k in args.only.split(",")} if args.only else None
    wanted_targets = set(args.targets.split(","))
    scenarios = [s for s in standard(args.quick) + client_comparison(args.quick)
                 if only is None or s.key in only or s.key.split("-")[0] in only]
    if args.render_from:
        return rerender(args.render_from, args.out, scenarios)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sb-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    targets = make_targets(workdir)
    groups: dict[str, list[Record]] = {}
    profiles: dict[str, str] = {}
    began = time.time()
    for scenario in scenarios:
        for name in scenario.targets:
            if name not in wanted_targets:
                continue
            record = run_one(scenario, targets[name], workdir)
            group = scenario.key.split("-")[0] if scenario.key.startswith("C") else scenario.key
            groups.setdefault(group, []).append(record)
            print(f"[{(time.time() - began) / 60:5.1f} min] {summary_line(record)}", flush=True)
    command = "python -m bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python -m bench"
    if args.profile:
        profiles = profile_runs(scenarios, targets, workdir, args.profile)
    elapsed = time.time() - began
    (workdir / "suite.json").write_bytes(orjson.dumps({"command": command.strip(), "elapsed": elapsed}))
    args.out.write_text(render(groups, command.strip(), elapsed, profiles), encoding="utf-8")
    print(f"wrote {args.out}; logs, results and reports in {workdir}")
    return 0


def profile_runs(scenarios: list[Scenario], targets: dict[str, Target], workdir: Path,
                 seconds: float) -> dict[str, str]:
    """S2 once more per profiled server, under py-spy: a sampled process runs slower, so these
    runs give the profiles only, never the tables."""
    s2 = next((s for s in scenarios if s.key == "S2"), None)
    if s2 is None:
        return {}
    profiled = replace(s2, key="S2-profile")
    profiles = {}
    for name in ("switchboard", "sio"):
        record = run_one(profiled, targets[name], workdir, profile_seconds=seconds)
        profiles[record.label] = record.profile
        print(f"profiled {record.label} under S2", flush=True)
    return profiles


def rerender(kept: Path, out: Path, scenarios: list[Scenario]) -> int:
    by_key = {s.key: s for s in scenarios}
    groups: dict[str, list[Record]] = {}
    profiles: dict[str, str] = {}
    command = "python -m bench"
    for scenario in scenarios:
        for name in scenario.targets:
            record = load(kept / f"{scenario.key}-{name}", by_key)
            profiled = load(kept / f"S2-profile-{name}", {"S2-profile": scenario}) if scenario.key == "S2" else None
            if profiled is not None and profiled.profile:
                profiles[profiled.label] = profiled.profile
            if record is None:
                continue
            groups.setdefault(scenario.key.split("-")[0] if scenario.key.startswith("C") else scenario.key,
                              []).append(record)
    meta = kept / "suite.json"
    elapsed = 0.0
    if meta.exists():
        saved = orjson.loads(meta.read_bytes())
        command, elapsed = saved["command"], saved["elapsed"]
    out.write_text(render(groups, command, elapsed, profiles), encoding="utf-8")
    print(f"wrote {out} from {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
