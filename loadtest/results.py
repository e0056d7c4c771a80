"""Adding up the workers: live totals, the per-second timeline, and the final results document.

The results document (``--json``) is the contract with everything downstream
(the summary table, the HTML report, the benchmark suite): counters are
totals over workers, latencies are ``{count, mean, p50, p90, p99, p999, max}``
in milliseconds, rates are per second over the phase they belong to, and
``problems`` lists, in words, everything that makes the run not clean.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .meter import HISTOGRAMS
from .spec import RunSpec
from .stats import Histogram, Integrity

Json = dict[str, Any]
COUNTERS = ("connected", "peak_connected", "connects", "published", "acked", "deliveries", "reconnects", "not_recovered", "requests")
REASONS = ("connect_failures", "disconnects", "publish_failures", "statuses")
SATURATED = 90.0  # % of a core: above it, a worker (not the server) may be the bottleneck


def _sum_counters(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total.most_common())


def _rate(count: float, start: float | None, end: float | None) -> float:
    return count / (end - start) if start is not None and end is not None and end > start else math.nan


class Aggregator:
    """Folds worker snapshots into totals and a timeline; builds the final document."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.started = time.time()
        self.phase = "starting"
        self.latest: dict[int, Json] = {}
        self.totals = {name: Histogram() for name in HISTOGRAMS}
        self._interval = {name: Histogram() for name in HISTOGRAMS}
        self._cpu_at_tick: dict[int, float] = {}
        self.timeline: list[Json] = []

    def progress(self, worker: int, snapshot: Json) -> None:
        for name, data in snapshot.pop("hist", {}).items():
            delta = Histogram.from_dict(data)
            self.totals[name].merge(delta)
            self._interval[name].merge(delta)
        self.latest[worker] = snapshot

    def current(self) -> Json:
        """Counter totals over the workers' latest snapshots."""
        snaps = list(self.latest.values())
        out: Json = {name: sum(int(s.get(name, 0)) for s in snaps) for name in COUNTERS}
        for name in REASONS:
            out[name] = _sum_counters(s.get(name, {}) for s in snaps)
        out["examples"] = {k: v for s in snaps for k, v in s.get("examples", {}).items()}
        return out

    def tick(self) -> Json:
        """Close one timeline interval: counters, latency of the interval, worker CPU %."""
        now = time.time()
        previous = self.timeline[-1] if self.timeline else {"t": 0.0, "deliveries": 0, "acked": 0, "requests": 0}
        row: Json = {"t": round(now - self.started, 3), "phase": self.phase}
        current = self.current()
        row.update({name: current[name] for name in COUNTERS})
        span = max(row["t"] - previous["t"], 1e-6)
        for name in ("deliveries", "acked", "requests"):
            row[f"{name}_per_s"] = (row[name] - previous[name]) / span
        for name in ("delivery", "ack", "rest"):
            interval = self._interval[name]
            row[f"{name}_p50"], row[f"{name}_p99"] = interval.percentile(50), interval.percentile(99)
        self._interval = {name: Histogram() for name in HISTOGRAMS}
        row["cpu"] = {}
        for worker, snap in sorted(self.latest.items()):
            before = self._cpu_at_tick.get(worker, snap["cpu_s"])
            row["cpu"][str(worker)] = 100 * (snap["cpu_s"] - before) / span
            self._cpu_at_tick[worker] = snap["cpu_s"]
        self.timeline.append(row)
        return row

    def final(self, results: dict[int, Json], heads: dict[str, int]) -> Json:
        """The results document; see the module docstring."""
        snaps = list(self.latest.values())
        current = self.current()
        phases = _phases(r.get("phases", {}) for r in results.values())
        first_publish = min((s["first_publish"] for s in snaps if s.get("first_publish")), default=None)
        last_ack = max((s["last_ack"] for s in snaps if s.get("last_ack")), default=None)
        last_delivery = max((s["last_delivery"] for s in snaps if s.get("last_delivery")), default=None)
        doc: Json = {
            "scenario": self.spec.scenario,
            "spec": self.spec.public(),
            "started_at": self.started,
            "phases": {k: round(v - self.started, 3) for k, v in phases.items()},
            "connections": self._connections(current, phases),
            "publish": {"published": current["published"], "acked": current["acked"],
                        "failures": current["publish_failures"],
                        "acked_per_s": _rate(current["acked"], first_publish, last_ack),
                        "ack_latency_ms": self.totals["ack"].summary()},
            "delivery": {"deliveries": current["deliveries"],
                         "per_s": _rate(current["deliveries"], first_publish, last_delivery),
                         "latency_ms": self.totals["delivery"].summary(),
                         "histogram": self.totals["delivery"].points()},
            "integrity": _integrity(results.values(), heads),
            "recovery": _recovery(current, self.totals["recovery"], results.values()),
            "rest": {"requests": current["requests"], "statuses": current["statuses"],
                     "per_s": _rate(current["requests"], phases.get("requests_start"), phases.get("requests_end")),
                     "latency_ms": self.totals["rest"].summary(),
                     "bad_pages": sum(int(r.get("bad_pages", 0)) for r in results.values())},
            "workers": self._workers(),
            "examples": current["examples"],
            "timeline": self.timeline,
        }
        doc["problems"] = problems(doc)
        return doc

    def _connections(self, current: Json, phases: dict[str, float]) -> Json:
        target = self.spec.clients + (self.spec.publishers if self.spec.scenario in ("fanout", "churn") else 0)
        if self.spec.scenario == "rest":
            target = 0
        ramp = (phases["ramp_end"] - phases["ramp_start"]) if {"ramp_start", "ramp_end"} <= phases.keys() else None
        # per-worker peaks added up: exact when the workers peak together, as at the end of a ramp
        peak = max(current["peak_connected"], max((row["connected"] for row in self.timeline), default=0))
        all_in = current["connects"] >= target and not current["connect_failures"]
        return {"target": target, "connects": current["connects"], "peak": peak,
                "failures": current["connect_failures"], "disconnects": current["disconnects"],
                "connect_per_s": current["connects"] / ramp if ramp else math.nan,
                "time_to_all_connected_s": ramp if all_in else None,
                "latency_ms": self.totals["connect"].summary()}

    def _workers(self) -> list[Json]:
        wall = max(time.time() - self.started, 1e-6)
        return [{"worker": w, "cpu_s": s["cpu_s"], "cpu_pct": 100 * s["cpu_s"] / wall,
                 "peak_cpu_pct": max((row["cpu"].get(str(w), 0.0) for row in self.timeline), default=0.0),
                 "max_rss_mb": s["max_rss_mb"]} for w, s in sorted(self.latest.items())]


def _phases(per_worker: Iterable[dict[str, float]]) -> dict[str, float]:
    """Each phase from its first start (``*_start``) to its last end (``*_end``) over the workers."""
    out: dict[str, float] = {}
    for phases in per_worker:
        for name, t in phases.items():
            late = name.endswith("_end")
            out[name] = max(out.get(name, t), t) if late else min(out.get(name, t), t)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _integrity(results: Iterable[Json], heads: dict[str, int]) -> Json:
    total, per_channel = Integrity(), dict[str, Integrity]()
    dropped = strays = 0
    for result in results:
        dropped += int(result.get("dropped", 0))
        strays += int(result.get("strays", 0))
        for channel, data in result.get("integrity", {}).items():
            part = Integrity.from_dict(data)
            per_channel.setdefault(channel, Integrity()).merge(part)
            total.merge(part)
    return {**total.to_dict(), "dropped_subscribers": dropped, "strays": strays,
            "per_channel": {ch: {**i.to_dict(), "head": heads.get(ch, 0)} for ch, i in sorted(per_channel.items())}}


def _recovery(current: Json, histogram: Histogram, results: Iterable[Json]) -> Json:
    storms = [r["storm"] for r in results if r.get("storm")]
    storm: Json = {}
    if storms:
        ends = [s["end"] for s in storms if s.get("end")]
        storm = {"clients": sum(s["clients"] for s in storms), "recovered": sum(s["recovered"] for s in storms),
                 "time_to_all_recovered_s": max(ends) - min(s["start"] for s in storms) if ends else None}
    return {"reconnects": current["reconnects"], "not_recovered": current["not_recovered"],
            "latency_ms": histogram.summary(), "storm": storm}


def problems(doc: Json) -> list[str]:
    """Everything that makes a run not clean, in words (empty: clean)."""
    out: list[str] = []
    integ, conns = doc["integrity"], doc["connections"]
    for key in ("loss", "duplicates", "order_violations", "dropped_subscribers"):
        if integ.get(key):
            out.append(f"{integ[key]} {key.replace('_', ' ')}")
    if conns["failures"]:
        out.append("connect failures: " + ", ".join(f"{k} x{v}" for k, v in conns["failures"].items()))
    if doc["publish"]["failures"]:
        out.append("publish failures: " + ", ".join(f"{k} x{v}" for k, v in doc["publish"]["failures"].items()))
    bad = {k: v for k, v in doc["rest"]["statuses"].items() if not k.startswith("2")}
    if bad:
        out.append("REST failures: " + ", ".join(f"{k} x{v}" for k, v in bad.items()))
    if doc["rest"]["bad_pages"]:
        out.append(f"{doc['rest']['bad_pages']} REST pages with gaps")
    storm = doc["recovery"]["storm"]
    if storm and storm["recovered"] < storm["clients"]:
        out.append(f"storm: {storm['clients'] - storm['recovered']} clients never recovered")
    return out


def saturated_workers(doc: Json) -> list[int]:
    """Workers that spent most of the run near a full core: their numbers are the tester's limit."""
    return [w["worker"] for w in doc["workers"] if w["peak_cpu_pct"] >= SATURATED]
