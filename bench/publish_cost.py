"""What one durable publish costs the server: CPU per publish, commit time and batch size.

Starts one Switchboard instance on a fresh PostgreSQL database and Redis prefix
(as the suite does), runs S5's load against it (50 publishers over 100
channels, no subscribers; as fast as the ack window allows, or at ``--rate``),
then reads the server's own metrics and CPU time:

    python -m bench.publish_cost                 # saturated: S5
    python -m bench.publish_cost --rate 5000     # fixed rate: S5r
    python -m bench.publish_cost --env SWITCHBOARD_GC_THRESHOLD=0   # compare a setting

Server CPU per publish is the figure to compare across changes to the publish
path: unlike throughput it hardly moves when the shared machine is busy.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import orjson
import psutil  # type: ignore[import-untyped]

from .targets import ROOT, SECRET, Switchboard

BUCKET = re.compile(r'^switchboard_publish_seconds_bucket\{le="([^"]+)",transport="socket"\} (\S+)$', re.M)
METRIC = re.compile(r"^(switchboard_(?:commit_seconds|commit_batch_size|publish_seconds)_(?:sum|count))(?:\{[^}]*\})? (\S+)$",
                    re.M)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """The upper bound of the cumulative histogram bucket holding quantile ``q``."""
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if total and count >= q * total:
            return f"{1000 * le:g} ms"
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0, help="publishes/s over all publishers (0: ack window)")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for the server (repeatable)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sb-publish-cost-"))
    extra = dict(item.split("=", 1) for item in args.env)
    target = Switchboard("switchboard", "Switchboard", workdir)
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)  # the target passes its environment on to the server
    try:
        [url] = target.start(1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        pid = target.pids[0]
        cpu_before = cpu_seconds(pid)
        out = workdir / "result.json"
        argv = [sys.executable, "-m", "loadtest", "--scenario", "fanout", "--clients", "0", "--channels", "100",
                "--publishers", "50", "--window", str(args.window), "--duration", str(args.duration),
                "--ramp", "1000", "--rate", str(args.rate), "--channel-prefix", "bench:", "--url", url,
                "--secret", SECRET, "--json", str(out)]
        subprocess.run(argv, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=args.duration + 120)
        cpu = cpu_seconds(pid) - cpu_before
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        metrics = {name: float(value) for name, value in METRIC.findall(text)}
        buckets = [(float(le), float(n)) for le, n in BUCKET.findall(text)]
    finally:
        target.stop()
    doc = orjson.loads(out.read_bytes())
    publish = doc["publish"]
    acked, lat = publish["acked"], publish["ack_latency_ms"]
    commits = metrics.get("switchboard_commit_seconds_count", 0) or float("nan")
    print(f"acked publishes/s      {publish['acked_per_s']:,.0f}   ({acked:,} acked, problems: {doc['problems'] or 'none'})")
    print(f"ack latency ms         p50 {lat['p50']:.1f}   p99 {lat['p99']:.1f}   max {lat['max']:.1f}")
    print(f"server CPU / publish   {1e6 * cpu / max(acked, 1):.1f} us   (connects and ramp included)")
    print(f"publish to commit      {1000 * metrics['switchboard_publish_seconds_sum'] / max(metrics['switchboard_publish_seconds_count'], 1):.2f} ms mean, "
          f"p50 <= {quantile(buckets, 0.5)}, p99 <= {quantile(buckets, 0.99)} (histogram buckets)")
    print(f"commit                 {1000 * metrics['switchboard_commit_seconds_sum'] / commits:.2f} ms mean, "
          f"{metrics['switchboard_commit_batch_size_sum'] / commits:.0f} events per batch, "
          f"writer busy {100 * metrics['switchboard_commit_seconds_sum'] / args.duration:.0f}% of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
