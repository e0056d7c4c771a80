"""The scenarios' worker sides, by ``--scenario`` name."""

from __future__ import annotations

from .base import WorkerContext, WorkerScenario
from .churn import ChurnScenario
from .connect import ConnectScenario
from .fanout import FanoutScenario
from .rest import RestScenario

WORKER_SCENARIOS: dict[str, type[WorkerScenario]] = {
    "connect": ConnectScenario,
    "fanout": FanoutScenario,
    "churn": ChurnScenario,
    "rest": RestScenario,
}

__all__ = ["WORKER_SCENARIOS", "WorkerContext", "WorkerScenario"]
