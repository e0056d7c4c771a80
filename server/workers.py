"""``serve --workers N``: N server processes sharing one port (SO_REUSEPORT).

Workers coordinate exactly like separate instances, through the store and the
Redis broker, so the in-memory broker is refused. The parent only supervises:
it forwards SIGTERM/SIGINT (each worker drains), and if a worker dies on its
own it stops the others and exits non-zero, so the platform's supervisor
restarts the whole set instead of running degraded.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from .config import ConfigError, Settings

log = logging.getLogger(__name__)


def check_workers(settings: Settings, workers: int) -> None:
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers > 1 and settings.redis_url.startswith("memory:"):
        raise ConfigError(
            "--workers > 1 needs a shared broker: set SWITCHBOARD_REDIS_URL=redis://... "
            "(with memory:// each worker would only see its own publishes)"
        )


def run_workers(settings: Settings, workers: int) -> int:
    """Start ``workers`` processes and supervise them; returns the exit code."""
    supervisor = Supervisor(settings, workers)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    return supervisor.run()


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._settings = settings
        self._procs: list[BaseProcess] = [
            ctx.Process(target=_worker, args=(settings, i), name=f"switchboard-worker-{i}")
            for i in range(workers)
        ]
        self._stopping = False

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping = True
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                proc.terminate()  # SIGTERM: the worker drains

    def run(self) -> int:
        for proc in self._procs:
            proc.start()
        log.info("started %d workers on %s:%d", len(self._procs), self._settings.host, self._settings.port)
        while any(p.is_alive() for p in self._procs):
            crashed = [p for p in self._procs if not p.is_alive() and p.exitcode not in (None, 0)]
            if crashed and not self._stopping:
                log.error("%s exited with %s; stopping the other workers", crashed[0].name, crashed[0].exitcode)
                self.stop()
                for proc in self._procs:
                    proc.join(self._settings.shutdown_timeout + 10)
                return 1
            time.sleep(0.2)
        return max(p.exitcode or 0 for p in self._procs)


def _worker(settings: Settings, index: int) -> None:
    from .__main__ import serve_forever
    from .logs import configure_logging

    worker_settings = settings.model_copy(update={"instance_id": f"{settings.instance_id}-w{index}"})
    configure_logging(settings.log_level, fmt=settings.log_format, instance=worker_settings.instance_id)
    serve_forever(worker_settings, reuse_port=True)
