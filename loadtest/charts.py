"""Small, dependency-free SVG charts for the HTML report: time series and a latency histogram.

Hand-written SVG keeps the load tester installable on any load-generating box
(no numpy/matplotlib) and the report one self-contained file. Values that are
NaN or None are gaps in a line, never zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 36, 44
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(math.ceil((high - first) / step) + 1)]


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2g}" if abs(value) < 0.01 else f"{value / 1000:,.3g}k"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _frame(title: str, x_label: str, y_label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" '
            f'font-family="system-ui,sans-serif" font-size="11">'
            f'<text x="{LEFT}" y="20" font-size="14" font-weight="600">{escape(title)}</text>'
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" fill="#555">'
            f'{escape(x_label)}</text><text transform="translate(14,{(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
            f'text-anchor="middle" fill="#555">{escape(y_label)}</text>{"".join(body)}</svg>')


class _Axes:
    """Maps data to pixels; ``log`` axes take log10 of positive values."""

    def __init__(self, xs: tuple[float, float], ys: tuple[float, float], log_x: bool = False) -> None:
        self.log_x = log_x
        x0, x1 = (math.log10(xs[0]), math.log10(xs[1])) if log_x else xs
        self.xt = nice_ticks(x0, x1, 6) if not log_x else [float(v) for v in range(math.floor(x0), math.ceil(x1) + 1)]
        self.yt = nice_ticks(ys[0], ys[1])
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]

    def x(self, value: float) -> float:
        v = math.log10(value) if self.log_x else value
        return LEFT + (v - self.x0) / ((self.x1 - self.x0) or 1) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - (value - self.y0) / ((self.y1 - self.y0) or 1) * (HEIGHT - TOP - BOTTOM)

    def grid(self) -> list[str]:
        out = []
        for t in self.yt:
            out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{self.y(t):.1f}" y2="{self.y(t):.1f}" '
                       f'stroke="#e5e7eb"/><text x="{LEFT - 6}" y="{self.y(t) + 4:.1f}" text-anchor="end">'
                       f'{_fmt(t)}</text>')
        for t in self.xt:
            px = LEFT + (t - self.x0) / ((self.x1 - self.x0) or 1) * (WIDTH - LEFT - RIGHT)
            label = _fmt(10 ** t) if self.log_x else _fmt(t)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#f1f5f9"/>'
                       f'<text x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{label}</text>')
        return out


def line_chart(title: str, series: Sequence[Series], x_label: str = "seconds", y_label: str = "") -> str:
    """Lines over a shared x axis, with a legend; empty series are skipped."""
    finite = [(x, y) for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    if not finite:
        return _frame(title, x_label, y_label, [f'<text x="{LEFT}" y="{HEIGHT / 2}">no data</text>'])
    xs, ys = [p[0] for p in finite], [p[1] for p in finite]
    axes = _Axes((min(xs), max(xs)), (min(0.0, min(ys)), max(ys) * 1.05 or 1.0))
    body = axes.grid()
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path, pen_down = [], False
        for x, y in s.points:
            if y is None or not math.isfinite(y):
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{axes.x(x):.1f},{axes.y(y):.1f}")
            pen_down = True
        body.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2">'
                    f'<title>{escape(s.name)}</title></path>')
        lx = WIDTH - RIGHT - (len(series) - i) * 150  # right-aligned, clear of the title
        body.append(f'<rect x="{lx}" y="{TOP - 12}" width="10" height="3" fill="{color}"/>'
                    f'<text x="{lx + 14}" y="{TOP - 8}">{escape(s.name)}</text>')
    return _frame(title, x_label, y_label, body)


def latency_histogram(title: str, points: Sequence[tuple[float, int]], markers: dict[str, float]) -> str:
    """Share of samples per latency bucket on a log axis (ms), with percentile markers."""
    points = [(max(x, 1e-3), c) for x, c in points if c > 0]
    if not points:
        return _frame(title, "milliseconds (log)", "% of samples", [f'<text x="{LEFT}" y="{HEIGHT / 2}">no data</text>'])
    total = sum(c for _, c in points)
    bins: dict[int, int] = {}
    for x, c in points:  # regroup 1 %-wide buckets into 20 bins per decade, enough to see the shape
        key = math.floor(math.log10(x) * 20)
        bins[key] = bins.get(key, 0) + c
    lo, hi = 10 ** (min(bins) / 20), 10 ** ((max(bins) + 1) / 20)
    axes = _Axes((lo, hi), (0.0, max(bins.values()) / total * 100 * 1.1), log_x=True)
    body = axes.grid()
    for key, count in sorted(bins.items()):
        x0, x1 = axes.x(10 ** (key / 20)), axes.x(10 ** ((key + 1) / 20))
        y = axes.y(count / total * 100)
        body.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                    f'height="{HEIGHT - BOTTOM - y:.1f}" fill="#93c5fd"><title>{_fmt(10 ** (key / 20))} ms: '
                    f'{count:,}</title></rect>')
    for i, (name, value) in enumerate(markers.items()):
        if value and math.isfinite(value) and lo <= value <= hi * 10:
            px = axes.x(value)
            body.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                        f'stroke="{PALETTE[(i + 1) % len(PALETTE)]}" stroke-dasharray="4 3"/>'
                        f'<text x="{px + 3:.1f}" y="{TOP + 12 + 12 * i}" fill="{PALETTE[(i + 1) % len(PALETTE)]}">'
                        f'{escape(name)} {value:,.0f} ms</text>' if value >= 10 else f'{escape(name)} {value:.2f} ms</text>')
    return _frame(title, "milliseconds (log)", "% of samples", body)
