"""Command line: ``python -m server serve | migrate | reset-epoch | token``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

from .config import ConfigError, Settings, load_settings

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("server")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description="Switchboard real-time event server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (settings from SWITCHBOARD_* variables)")
    serve.add_argument("--host", help="bind address (default SWITCHBOARD_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default SWITCHBOARD_PORT, PORT or 8080)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (needs SWITCHBOARD_REDIS_URL=redis://...)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    reset = sub.add_parser("reset-epoch", help="start a new epoch for channel histories (after restoring a "
                                               "backup): no earlier position is recovered from them")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every channel (what a restored database needs)")
    which.add_argument("--namespace", help="every channel of one namespace")
    which.add_argument("--channel", action="append", metavar="NAME", help="one channel (repeatable)")
    token = sub.add_parser("token", help="print a JWT signed with the configured secret")
    token.add_argument("--sub", required=True, help="user id (the 'sub' claim)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (default 3600)")
    token.add_argument("--channels", nargs="*", default=[], metavar="GLOB",
                       help="channel globs the token may use, e.g. 'chat:*'")
    token.add_argument("--role", choices=["server"], help="'server' may publish anywhere")
    token.add_argument("--info", type=json.loads, default=None, help="JSON object shown in presence")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        from .logs import configure_logging

        configure_logging(settings.log_level, fmt=settings.log_format, instance=settings.instance_id)
        if args.command == "serve":
            return _serve(settings, args.host, args.port, args.workers)
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "reset-epoch":
            return asyncio.run(_reset_epoch(settings, args.channel, args.namespace))
        return _token(settings, args)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings, host: str | None, port: int | None, workers: int) -> int:
    from .workers import check_workers, run_workers

    if host is not None or port is not None:
        settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    check_workers(settings, workers)
    if workers > 1:
        _check_app(settings)  # configuration errors surface here, once, not in every worker
        return run_workers(settings, workers)
    serve_forever(settings)
    return 0


def _check_app(settings: Settings) -> None:
    from .app import create_app

    try:
        create_app(settings)  # builds objects only: nothing connects or listens
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def serve_forever(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run one server process until SIGTERM/SIGINT (then drain and return)."""
    from aiohttp import web

    from .app import create_app
    from .logs import AccessLogger

    _install_uvloop()
    _check_app(settings)
    app = create_app(settings)
    if settings.gc_threshold:
        app.on_startup.append(partial(_tune_gc, threshold=settings.gc_threshold))
    app.on_startup.append(_stop_once)
    log.info("store %s, broker %s", _scheme(settings.database_url), _scheme(settings.redis_url))
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port,
        backlog=settings.listen_backlog,
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_timeout,
        print=lambda msg: log.info("%s", msg.strip()),
    )


async def _stop_once(_: object) -> None:
    """SIGTERM or SIGINT stops the server once (aiohttp's graceful exit); after that,
    while it drains and closes, further ones are logged and ignored. aiohttp would
    raise its GracefulExit again, and run_app then cancels the shutdown midway:
    cleanup contexts cut off, a traceback, exit status 1. SIGKILL still stops at once."""
    from aiohttp.web import GracefulExit

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for again in STOP_SIGNALS:
            loop.add_signal_handler(again, log.info, "already shutting down: %s ignored (SIGKILL stops at once)",
                                    again.name)
        log.info("shutting down: draining connections and commits")
        raise GracefulExit()

    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop)  # replaces run_app's own handler
    except NotImplementedError:  # no signal handlers on this platform's loop: run_app's stay
        pass


async def _migrate(settings: Settings) -> int:
    from channels.store import open_store

    store = open_store(settings.database_url)
    await store.start()
    await store.close()
    print(f"migrations applied to {_scheme(settings.database_url)} store")
    return 0


async def _reset_epoch(settings: Settings, channels: list[str] | None, namespace: str | None) -> int:
    from channels.store import open_store

    store = open_store(settings.database_url)
    await store.start()
    try:
        changed = await store.reset_epochs(channels=channels, namespace=namespace)
    finally:
        await store.close()
    print(f"new epoch for {changed} channel(s) in the {_scheme(settings.database_url)} store")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from .auth import mint_token

    if args.info is not None and not isinstance(args.info, dict):
        raise ConfigError("--info must be a JSON object")
    print(mint_token(settings, args.sub, ttl=args.ttl, channels=args.channels, role=args.role, info=args.info))
    return 0


async def _tune_gc(_app: object, *, threshold: int) -> None:
    """Once everything has started: move what exists now (modules, pools, the app) out
    of the collector's sight, and collect young objects less often. A server makes
    short-lived containers by the million (futures, acks, events); with Python's
    defaults, collections took about a quarter of the server's CPU under publish
    load and their pauses showed in the ack latency's tail (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)
    log.info("garbage collector: startup objects frozen, young generation threshold %d", threshold)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _scheme(url: str) -> str:
    return url.split(":", 1)[0]


if __name__ == "__main__":
    sys.exit(main())
