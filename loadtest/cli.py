"""``python -m loadtest``: parse options, check the setup, run, show, save.

Exit status: 0 a clean run; 1 the run finished with problems (loss,
duplicates, order violations, failures: all listed); 2 the setup is wrong
(bad options, server unreachable, token refused, a worker died) with one line
saying why; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from rich.console import Console

from .coordinator import Coordinator, RunFailed, preflight
from .display import LiveDisplay, summary
from .report import write as write_report
from .results import Json
from .spec import SCENARIOS, RunSpec
from .tokens import TokenSpec

EXAMPLES = """examples:
  python -m loadtest --scenario connect --url http://127.0.0.1:8080 --secret "$SECRET" --clients 10000 --procs 2
  python -m loadtest --scenario fanout --url http://a:8080 --url http://b:8080 --secret "$SECRET" \\
      --clients 1000 --channels 1 --publishers 4 --events 2000 --report fanout.html
  python -m loadtest --scenario churn --secret "$SECRET" --clients 2000 --storm --duration 20
  python -m loadtest --scenario rest --secret "$SECRET" --rest-concurrency 50 --duration 15 --json rest.json
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description="Simulate Socket.IO clients against "
                                "Switchboard (or anything speaking its API) and measure what it holds.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=SCENARIOS, default="connect")
    p.add_argument("--url", action="append", default=[], help="server URL; repeat (or comma-separate) for "
                   "several instances, clients go round-robin (default http://127.0.0.1:8080)")
    auth = p.add_argument_group("tokens")
    auth.add_argument("--secret", default=os.environ.get("SWITCHBOARD_JWT_SECRET"),
                      help="HS256 secret to mint tokens with (default $SWITCHBOARD_JWT_SECRET)")
    auth.add_argument("--tokens", type=Path, help="file of ready tokens, one per line, used round-robin")
    auth.add_argument("--token-channels", nargs="+", help="channel globs in minted tokens (default PREFIX*)")
    auth.add_argument("--token-ttl", type=int, default=3600)
    auth.add_argument("--audience")
    auth.add_argument("--issuer")
    load = p.add_argument_group("load")
    load.add_argument("--procs", type=int, default=1, help="worker processes (about 5,000 connections each)")
    load.add_argument("--client", choices=["lean", "sio"], default="lean",
                      help="lean: our picows client (default); sio: python-socketio AsyncClient")
    load.add_argument("--clients", type=int, default=100, help="connections (connect) or subscribers")
    load.add_argument("--channels", type=int, default=1)
    load.add_argument("--channel-prefix", default="loadtest:", help="channels are PREFIX<run id>-<k>")
    load.add_argument("--publishers", type=int, default=1)
    load.add_argument("--rate", type=float, default=0.0, help="events/s over all publishers (0: ack window)")
    load.add_argument("--window", type=int, default=16, help="unacknowledged publishes per publisher")
    load.add_argument("--events", type=int, default=0, help="events to publish in all (0: for --duration)")
    load.add_argument("--duration", type=float, default=10.0, help="seconds to publish / hold / request")
    load.add_argument("--ramp", type=float, default=500.0, help="new connections per second (0: at once)")
    load.add_argument("--connect-concurrency", type=int, default=500)
    load.add_argument("--connect-timeout", type=float, default=20.0)
    load.add_argument("--ack-timeout", type=float, default=30.0)
    load.add_argument("--drain-timeout", type=float, default=30.0)
    load.add_argument("--payload", type=int, default=64, help="bytes of padding per event")
    churn = p.add_argument_group("churn")
    churn.add_argument("--churn-fraction", type=float, default=0.1)
    churn.add_argument("--churn-interval", type=float, default=2.0)
    churn.add_argument("--churn-offline", type=float, default=0.5)
    churn.add_argument("--storm", action="store_true", help="all subscribers drop and come back at once")
    rest = p.add_argument_group("rest")
    rest.add_argument("--rest-concurrency", type=int, default=20)
    rest.add_argument("--rest-prefill", type=int, default=200)
    out = p.add_argument_group("output")
    out.add_argument("--json", help="write the results document here ('-': stdout)")
    out.add_argument("--report", type=Path, help="write an HTML report with plots here")
    out.add_argument("--quiet", action="store_true", help="no live display, no summary")
    out.add_argument("--no-preflight", action="store_true", help="skip the one-connection check of every URL")
    return p


def build_spec(args: argparse.Namespace) -> RunSpec:
    urls = tuple(u.strip() for arg in (args.url or ["http://127.0.0.1:8080"]) for u in arg.split(",") if u.strip())
    if args.tokens is None and not args.secret:
        raise ValueError("no token source: give --secret (or set SWITCHBOARD_JWT_SECRET) or --tokens FILE")
    globs = tuple(args.token_channels or [f"{args.channel_prefix}*"])
    tokens = TokenSpec(secret=args.secret, path=str(args.tokens) if args.tokens else None, channels=globs,
                       ttl=args.token_ttl, audience=args.audience, issuer=args.issuer)
    tokens.build()  # a missing or empty token file fails here, before any process starts
    spec = RunSpec(
        scenario=args.scenario, urls=urls, tokens=tokens, client=args.client, procs=args.procs,
        clients=args.clients, channels=args.channels, channel_prefix=args.channel_prefix,
        publishers=args.publishers, rate=args.rate, window=args.window, events=args.events,
        duration=args.duration, ramp=args.ramp, connect_concurrency=args.connect_concurrency,
        connect_timeout=args.connect_timeout, ack_timeout=args.ack_timeout, drain_timeout=args.drain_timeout,
        payload=args.payload, churn_fraction=args.churn_fraction, churn_interval=args.churn_interval,
        churn_offline=args.churn_offline, storm=args.storm, rest_concurrency=args.rest_concurrency,
        rest_prefill=args.rest_prefill,
    )
    spec.check()
    return spec


async def execute(spec: RunSpec, console: Console, quiet: bool, check: bool = True) -> Json:
    """Preflight (unless ``check`` is off), then run with the live display; the results document."""
    if check:
        await preflight(spec)
    if quiet:
        return await Coordinator(spec).run()
    with LiveDisplay(console, f"loadtest {spec.scenario} · {spec.clients:,} clients · {spec.procs} procs") as live:
        return await Coordinator(spec, on_tick=live.update).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=args.json == "-")
    try:
        spec = build_spec(args)
        doc = asyncio.run(execute(spec, console, args.quiet, check=not args.no_preflight))
    except (ValueError, OSError, RunFailed) as exc:
        console.print(f"[bold red]loadtest:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]loadtest: interrupted[/]")
        return 130
    if not args.quiet:
        console.print(summary(doc))
    if args.json == "-":
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    elif args.json:
        Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if args.report:
        write_report(doc, args.report)
        if not args.quiet:
            console.print(f"report: {args.report}")
    return 1 if doc["problems"] else 0
