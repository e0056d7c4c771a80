"""What a person watches: a live panel while the run goes, a summary table at the end.

On a terminal the panel is redrawn every second (rich ``Live``); when output
is piped (CI, the benchmark suite) a plain line is printed every few seconds
instead, so logs stay readable.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .results import SATURATED, Aggregator, Json, saturated_workers

PLAIN_EVERY = 5.0


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v:,}" for k, v in list(counts.items())[:4]) or "none"


class LiveDisplay:
    """Renders the aggregator's latest timeline row; ``update`` is the coordinator's tick hook."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self._live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> LiveDisplay:
        if self.console.is_terminal:
            self._live = Live(Text("starting workers..."), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, agg: Aggregator) -> None:
        if not agg.timeline:
            return
        row, current = agg.timeline[-1], agg.current()
        if self._live is not None:
            self._live.update(self._panel(agg.phase, row, current))
        elif time.time() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.time()
            self.console.print(
                f"[{row['t']:6.1f}s] {agg.phase:<10} conn {row['connected']:,} fail "
                f"{sum(current['connect_failures'].values()):,} | acked {row['acked']:,} "
                f"({_n(row['acked_per_s'])}/s) | deliv {row['deliveries']:,} ({_n(row['deliveries_per_s'])}/s, "
                f"p99 {_n(row['delivery_p99'], 1)} ms) | req {row['requests']:,} | cpu "
                + " ".join(f"{v:.0f}%" for v in row["cpu"].values()),
                highlight=False,
            )

    def _panel(self, phase: str, row: Json, current: Json) -> Panel:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan")
        table.add_column()
        table.add_row("phase", f"{phase}  ({row['t']:.0f}s)")
        table.add_row("connections", f"{row['connected']:,} open, {current['connects']:,} made, "
                                     f"failed: {_reasons(current['connect_failures'])}")
        if current["disconnects"]:
            table.add_row("dropped", _reasons(current["disconnects"]))
        if row["published"]:
            table.add_row("publish", f"{row['acked']:,}/{row['published']:,} acked, {_n(row['acked_per_s'])}/s, "
                                     f"ack p50 {_n(row['ack_p50'], 1)} ms p99 {_n(row['ack_p99'], 1)} ms"
                                     + (f", failed: {_reasons(current['publish_failures'])}"
                                        if current["publish_failures"] else ""))
            table.add_row("deliveries", f"{row['deliveries']:,}, {_n(row['deliveries_per_s'])}/s, latency p50 "
                                        f"{_n(row['delivery_p50'], 1)} ms p99 {_n(row['delivery_p99'], 1)} ms")
        if row["reconnects"]:
            table.add_row("recovery", f"{row['reconnects']:,} reconnects, {row['not_recovered']:,} not recovered")
        if row["requests"] or current["statuses"]:
            table.add_row("rest", f"{row['requests']:,} requests, {_n(row['requests_per_s'])}/s, "
                                  f"p50 {_n(row['rest_p50'], 1)} ms p99 {_n(row['rest_p99'], 1)} ms, "
                                  f"{_reasons(current['statuses'])}")
        cpu = Text()
        for worker, pct in row["cpu"].items():
            cpu.append(f"w{worker} {pct:.0f}%  ", style="bold red" if pct >= SATURATED else "")
        table.add_row("tester cpu", cpu)
        return Panel(table, title=self.title, border_style="blue")


def summary(doc: Json) -> Group:
    """The end-of-run table, sections shown only when the scenario produced them."""
    table = Table(title=f"loadtest {doc['scenario']} — summary", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    conns, pub, dlv, integ = doc["connections"], doc["publish"], doc["delivery"], doc["integrity"]
    if conns["target"]:
        table.add_row("connections", f"{conns['connects']:,} of {conns['target']:,} (peak {conns['peak']:,} open), "
                                     f"{_n(conns['connect_per_s'])}/s, all in "
                                     f"{_n(conns['time_to_all_connected_s'], 1)} s")
        lat = conns["latency_ms"]
        table.add_row("connect latency", f"p50 {_n(lat['p50'], 1)} ms  p99 {_n(lat['p99'], 1)} ms  "
                                         f"max {_n(lat['max'], 1)} ms")
        table.add_row("connect failures", _reasons(conns["failures"]))
        if conns["disconnects"]:
            table.add_row("dropped by server", _reasons(conns["disconnects"]))
    if pub["published"]:
        lat = pub["ack_latency_ms"]
        table.add_row("publishes", f"{pub['acked']:,} acked of {pub['published']:,}, {_n(pub['acked_per_s'])}/s; "
                                   f"ack p50 {_n(lat['p50'], 1)} ms p99 {_n(lat['p99'], 1)} ms")
        lat = dlv["latency_ms"]
        table.add_row("deliveries", f"{dlv['deliveries']:,}, {_n(dlv['per_s'])}/s")
        table.add_row("latency (publish->receive)", f"p50 {_n(lat['p50'], 1)}  p90 {_n(lat['p90'], 1)}  "
                                                    f"p99 {_n(lat['p99'], 1)}  max {_n(lat['max'], 1)} ms")
        style = "green" if not (integ["loss"] or integ["duplicates"] or integ["order_violations"]) else "bold red"
        table.add_row("integrity", Text(f"loss {integ['loss']:,}  duplicates {integ['duplicates']:,}  order "
                                        f"violations {integ['order_violations']:,}  over {integ['subscriptions']:,} "
                                        f"subscriptions in {len(integ['per_channel']):,} channels", style=style))
    rec = doc["recovery"]
    if rec["reconnects"] or rec["storm"]:
        lat = rec["latency_ms"]
        table.add_row("recovery", f"{rec['reconnects']:,} reconnects with since, {rec['not_recovered']:,} not "
                                  f"recovered; p50 {_n(lat['p50'], 1)} ms p99 {_n(lat['p99'], 1)} ms")
        if rec["storm"]:
            storm = rec["storm"]
            table.add_row("storm", f"{storm['recovered']:,}/{storm['clients']:,} recovered in "
                                   f"{_n(storm['time_to_all_recovered_s'], 2)} s")
    rest = doc["rest"]
    if rest["requests"] or rest["statuses"]:
        lat = rest["latency_ms"]
        table.add_row("rest", f"{rest['requests']:,} requests, {_n(rest['per_s'])}/s; p50 {_n(lat['p50'], 1)} ms "
                              f"p99 {_n(lat['p99'], 1)} ms; {_reasons(rest['statuses'])}")
    table.add_row("tester", "  ".join(f"w{w['worker']}: {w['cpu_pct']:.0f}% avg, {w['peak_cpu_pct']:.0f}% peak, "
                                      f"{w['max_rss_mb']:.0f} MB" for w in doc["workers"]))
    return Group(table, *_notes(doc))


def _notes(doc: Json) -> list[Text]:
    notes = [Text(f"problem: {p}", style="bold red") for p in doc["problems"]]
    for reason, example in doc.get("examples", {}).items():
        notes.append(Text(f"  e.g. {reason}: {example}", style="dim"))
    if saturated_workers(doc):
        notes.append(Text("note: the load tester's workers peaked near a full core; add --procs or read the "
                          "rates as the tester's limit", style="yellow"))
    if not doc["problems"]:
        notes.append(Text("clean run: no loss, no duplicates, no order violations, no failures", style="green"))
    return notes
