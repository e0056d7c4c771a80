"""``--report report.html``: one self-contained page with the numbers that matter and their plots.

Headline cards first (what a reader asks: how many connections, how fast, how
slow, anything lost?), then the plots (latency distribution; deliveries, acks
and connections over time; latency and tester CPU over time), then the
integrity per channel and the exact options of the run.
"""

from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from typing import Any

from .charts import Series, latency_histogram, line_chart
from .results import Json

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1500px;color:#111;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} .sub{color:#666;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px} .card span{color:#666;font-size:12px}
.ok{color:#15803d} .bad{color:#b91c1c}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:16px}
.chart{width:100%;height:auto;border:1px solid #f1f5f9;border-radius:8px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border-bottom:1px solid #eee;padding:4px 10px;
text-align:right} th{background:#f8fafc} td:first-child,th:first-child{text-align:left}
pre{background:#f8fafc;padding:12px;border-radius:8px;font-size:12px;overflow:auto}
"""


def _n(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _card(label: str, value: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{escape(value)}</b><span>{escape(label)}</span></div>'


def _cards(doc: Json) -> str:
    conns, pub, dlv, integ = doc["connections"], doc["publish"], doc["delivery"], doc["integrity"]
    cards = []
    if conns["target"]:
        cards += [_card("connections (peak open)", _n(conns["peak"])),
                  _card("connects/s", _n(conns["connect_per_s"])),
                  _card("connect failures", _n(sum(conns["failures"].values())),
                        "bad" if conns["failures"] else "ok")]
    if pub["published"]:
        lat = dlv["latency_ms"]
        clean = not (integ["loss"] or integ["duplicates"] or integ["order_violations"])
        cards += [_card("acked publishes/s", _n(pub["acked_per_s"])), _card("deliveries/s", _n(dlv["per_s"])),
                  _card("latency p50 / p99 (ms)", f"{_n(lat['p50'], 1)} / {_n(lat['p99'], 1)}"),
                  _card("loss / dup / order", f"{integ['loss']} / {integ['duplicates']} / "
                                              f"{integ['order_violations']}", "ok" if clean else "bad")]
    if doc["recovery"]["storm"]:
        storm = doc["recovery"]["storm"]
        cards.append(_card(f"storm: {storm['clients']:,} recovered in (s)", _n(storm["time_to_all_recovered_s"], 2)))
    if doc["rest"]["requests"]:
        cards += [_card("REST requests/s", _n(doc["rest"]["per_s"])),
                  _card("REST p99 (ms)", _n(doc["rest"]["latency_ms"]["p99"], 1))]
    return f'<div class="cards">{"".join(cards)}</div>'


def _charts(doc: Json) -> str:
    tl = doc["timeline"]

    def series(name: str, key: str) -> Series:
        return Series(name, [(row["t"], row.get(key)) for row in tl])

    charts = []
    if doc["delivery"]["deliveries"]:
        lat = doc["delivery"]["latency_ms"]
        charts.append(latency_histogram("Publish → receive latency", doc["delivery"]["histogram"],
                                        {"p50": lat["p50"], "p99": lat["p99"], "max": lat["max"]}))
        charts.append(line_chart("Deliveries and acks per second",
                                 [series("deliveries/s", "deliveries_per_s"), series("acked publishes/s", "acked_per_s")],
                                 y_label="per second"))
        charts.append(line_chart("Latency over time", [series("delivery p50", "delivery_p50"),
                                                       series("delivery p99", "delivery_p99"),
                                                       series("ack p99", "ack_p99")], y_label="ms"))
    if doc["rest"]["requests"]:
        charts.append(line_chart("REST", [series("requests/s", "requests_per_s")], y_label="per second"))
        charts.append(line_chart("REST latency", [series("p50", "rest_p50"), series("p99", "rest_p99")], y_label="ms"))
    charts.append(line_chart("Open connections", [series("connected", "connected")], y_label="connections"))
    workers = sorted({w for row in tl for w in row["cpu"]})
    charts.append(line_chart("Load tester CPU per worker", [
        Series(f"worker {w}", [(row["t"], row["cpu"].get(w)) for row in tl]) for w in workers], y_label="% of a core"))
    return f'<div class="charts">{"".join(charts)}</div>'


def _channels(doc: Json, limit: int = 50) -> str:
    per = doc["integrity"]["per_channel"]
    if not per:
        return ""
    worst = sorted(per.items(), key=lambda kv: -(kv[1]["loss"] + kv[1]["duplicates"] + kv[1]["order_violations"]))
    rows = "".join(f"<tr><td>{escape(ch)}</td><td>{i['head']:,}</td><td>{i['subscriptions']:,}</td>"
                   f"<td>{i['received']:,}</td><td>{i['loss']:,}</td><td>{i['duplicates']:,}</td>"
                   f"<td>{i['order_violations']:,}</td></tr>" for ch, i in worst[:limit])
    more = f"<p>{len(per) - limit:,} more channels in the JSON results.</p>" if len(per) > limit else ""
    return ("<h2>Integrity per channel</h2><table><tr><th>channel</th><th>head</th><th>subscribers</th>"
            f"<th>received</th><th>loss</th><th>duplicates</th><th>order violations</th></tr>{rows}</table>{more}")


def render(doc: Json) -> str:
    """The report page for a results document."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["started_at"]))
    spec = doc["spec"]
    problems = "".join(f'<li class="bad">{escape(p)}</li>' for p in doc["problems"]) or \
        '<li class="ok">clean run: no loss, duplicates, order violations or failures</li>'
    options = "\n".join(f"{k}: {v}" for k, v in spec.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>loadtest {escape(doc['scenario'])}</title>"
            f"<style>{STYLE}</style></head><body><h1>Switchboard load test: {escape(doc['scenario'])}</h1>"
            f"<p class='sub'>{escape(when)} · {spec['clients']:,} clients · {len(spec['urls'])} server(s) · "
            f"{spec['procs']} worker process(es) · {escape(spec['client'])} client</p>{_cards(doc)}"
            f"<ul>{problems}</ul>{_charts(doc)}{_channels(doc)}<h2>Options</h2><pre>{escape(options)}</pre>"
            "</body></html>")


def write(doc: Json, path: Path) -> None:
    path.write_text(render(doc), encoding="utf-8")
