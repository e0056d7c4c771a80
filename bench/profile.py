"""Where a server's time goes: py-spy samples of one instance during a run, summarized.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``);
only samples where the thread was running are kept (py-spy skips idle ones),
so the percentages below are of the server's busy time. Each sample is charged
to the code *responsible* for it: the innermost frame outside the standard
library (time in ``asyncio.create_task`` called by python-socketio is
python-socketio's). Samples whose only non-stdlib frame is aiohttp's
``run_app`` are the event loop itself (uvloop's C code: polling, callbacks).
Three views: by area, by responsible function, and by self time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

AREAS = {  # area: top-level packages of its frames (py-spy shows paths relative to sys.path)
    "Switchboard channels/ (fan-out, service, store, relay)": ("channels",),
    "Switchboard handlers/ + server/": ("handlers", "server"),
    "python-socketio (rooms, emit, packet encode)": ("socketio",),
    "python-engineio (per-socket queues, ws send)": ("engineio",),
    "aiohttp (HTTP, websocket frames)": ("aiohttp",),
    "asyncpg (PostgreSQL)": ("asyncpg",),
    "redis-py (broker)": ("redis",),
    "pydantic (validation)": ("pydantic", "pydantic_core"),
    "jwt (token verification)": ("jwt",),
}
EVENT_LOOP = "event loop (polling, callbacks, transports)"


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[loadtest]'")
    return found


class Profiler:
    """Starts ``py-spy record`` on ``pid`` after ``delay`` seconds (past the connect ramp)."""

    def __init__(self, pid: int, out: Path, seconds: float, delay: float = 4.0) -> None:
        self.pid, self.seconds = pid, seconds
        self.raw = out / "profile.raw"
        self._start_at = time.monotonic() + delay
        self._proc: subprocess.Popen[bytes] | None = None

    def poll(self) -> None:
        if self._proc is None and time.monotonic() >= self._start_at:
            self._proc = subprocess.Popen(
                [_py_spy(), "record", "-p", str(self.pid), "-d", str(int(self.seconds)), "-r", "100",
                 "-f", "raw", "-o", str(self.raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> str:
        if self._proc is None:
            return "(the run ended before the profiler started)"
        try:
            self._proc.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return summarize(self.raw) if self.raw.exists() else "(py-spy wrote no profile)"


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def summarize(raw: Path, top: int = 15) -> str:
    """A markdown summary: busy samples by area and the hottest functions by self time."""
    stacks = _stacks(raw)
    total = sum(c for _, c in stacks) or 1
    areas: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        owner = _owner(frames)
        areas[_area(owner)] += count
        owners[_short(owner)] += count
        leaves[_short(frames[-1])] += count
    lines = [f"{total:,} busy samples at 100 Hz.", "", "| Area responsible | % of busy time |", "|---|---:|"]
    lines += [f"| {area} | {100 * n / total:.1f} |" for area, n in areas.most_common()]
    lines += ["", "| Responsible function (innermost non-stdlib frame) | % |", "|---|---:|"]
    lines += [f"| `{name}` | {100 * n / total:.1f} |" for name, n in owners.most_common(top)]
    lines += ["", "| Self time (innermost frame) | % |", "|---|---:|"]
    lines += [f"| `{name}` | {100 * n / total:.1f} |" for name, n in leaves.most_common(top)]
    return "\n".join(lines)


def _package(frame: str) -> str:
    """``func (asyncio/tasks.py:12)`` -> ``asyncio``; ``f (<frozen runpy>:1)`` -> ``runpy``."""
    where = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    return where.lstrip("<").removeprefix("frozen ").split("/", 1)[0].removesuffix(".py").rstrip(">")


def _owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        if _package(frame) not in sys.stdlib_module_names:
            return frame
    return frames[-1]


def _area(frame: str) -> str:
    if frame.startswith("run_app ") or _package(frame) == "uvloop":
        return EVENT_LOOP
    package = _package(frame)
    return next((area for area, packages in AREAS.items() if package in packages), f"other ({package})")


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
