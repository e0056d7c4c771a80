"""CPU and memory per process group, sampled while a scenario runs.

The two cores are shared by the servers, PostgreSQL, Redis and the load
tester (and anything else on the machine); the CPU each group used over the
measured window says who was the bottleneck. Groups: ``server`` (the target's
instances), ``postgres`` and ``redis`` (every process of those names),
``loadtest`` (the tester and its workers) and ``other`` (the rest of the busy
machine time, from /proc/stat).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]

GROUPS = ("server", "postgres", "redis", "loadtest", "other")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    try:
        lines = open("/proc/net/netstat").read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
                 + getattr(t, "steal", 0))


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # cumulative CPU seconds per group
    server_rss: int  # bytes, summed over the server instances


@dataclass
class Sampler:
    """Call ``sample()`` periodically; per-pid CPU is kept monotonic as processes come and go."""

    server_pids: list[int]
    loadtest_pid: int | None = None
    samples: list[Sample] = field(default_factory=list)
    _seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def _group(self, proc: psutil.Process, loadtest: set[int]) -> str | None:
        if proc.pid in self.server_pids:
            return "server"
        if proc.pid in loadtest:
            return "loadtest"
        name = proc.info.get("name") or ""
        if name.startswith("postgres"):
            return "postgres"
        if name.startswith("redis-server"):
            return "redis"
        return None

    def _loadtest_pids(self) -> set[int]:
        if self.loadtest_pid is None:
            return set()
        try:
            root = psutil.Process(self.loadtest_pid)
            return {root.pid} | {c.pid for c in root.children(recursive=True)}
        except psutil.Error:
            return set()

    def sample(self) -> Sample:
        loadtest = self._loadtest_pids()
        rss = 0
        for proc in psutil.process_iter(["name"]):
            group = self._group(proc, loadtest)
            if group is None:
                continue
            try:
                times = proc.cpu_times()
                if group == "server":
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            self._seen[proc.pid] = (group, times.user + times.system)
        cpu = {g: 0.0 for g in GROUPS}
        for group, seconds in self._seen.values():
            cpu[group] += seconds
        cpu["other"] = _busy() - sum(cpu.values())
        sample = Sample(time.time(), cpu, rss)
        self.samples.append(sample)
        return sample

    def window(self, start: float, end: float) -> dict[str, float]:
        """Average CPU per group over ``[start, end]`` in % of one core (200 % = both cores)."""
        inside = [s for s in self.samples if start - 0.6 <= s.t <= end + 0.6]
        if len(inside) < 2:
            inside = self.samples[-2:]
        if len(inside) < 2:
            return {g: float("nan") for g in GROUPS}
        first, last = inside[0], inside[-1]
        span = max(last.t - first.t, 1e-6)
        return {g: max(0.0, 100 * (last.cpu[g] - first.cpu[g]) / span) for g in GROUPS}

    def rss_at(self, when: float) -> int:
        """Server RSS of the sample nearest ``when``."""
        return min(self.samples, key=lambda s: abs(s.t - when)).server_rss if self.samples else 0

    def rss_max(self, start: float, end: float) -> int:
        return max((s.server_rss for s in self.samples if start <= s.t <= end), default=0)
