"""What a run is: the scenario and its knobs, shared verbatim by the coordinator and every worker.

Work is split by a global index: worker ``w`` of ``n`` owns the clients,
publishers and REST loops whose index ``i`` has ``i % n == w``, and client
``i`` connects to ``urls[i % len(urls)]`` (round-robin over instances with no
load balancer in front). Rates and concurrency limits are totals, divided
evenly among workers.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from .tokens import TokenSpec

Scenario = Literal["connect", "fanout", "churn", "rest"]
SCENARIOS: tuple[Scenario, ...] = ("connect", "fanout", "churn", "rest")


@dataclass(frozen=True)
class RunSpec:
    """One load test run. Every duration is in seconds, every rate per second."""

    scenario: Scenario
    urls: tuple[str, ...]
    tokens: TokenSpec
    client: Literal["lean", "sio"] = "lean"
    procs: int = 1
    clients: int = 100  # connections (connect), subscribers (fanout/churn)
    channels: int = 1
    channel_prefix: str = "loadtest:"
    publishers: int = 1
    rate: float = 0.0  # total events/s over all publishers; 0: as fast as the ack window allows
    window: int = 16  # unacknowledged publishes per publisher
    events: int = 0  # total events to publish; 0: publish for `duration`
    duration: float = 10.0  # publishing (fanout/churn), holding (connect), requesting (rest)
    ramp: float = 500.0  # new connections/s in total; 0: as fast as possible
    connect_concurrency: int = 500  # connects in flight, in total
    connect_timeout: float = 20.0
    ack_timeout: float = 30.0
    drain_timeout: float = 30.0
    payload: int = 64  # bytes of padding in each event's data
    churn_fraction: float = 0.1  # churn: share of subscribers cycled per interval
    churn_interval: float = 2.0
    churn_offline: float = 0.5  # how long a cycled subscriber stays away
    storm: bool = False  # churn: every subscriber drops at once, then all come back with since
    rest_concurrency: int = 20
    rest_prefill: int = 200  # rest: events published per channel before measuring
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def channel(self, k: int) -> str:
        return f"{self.channel_prefix}{self.run_id}-{k % self.channels}"

    def url(self, index: int) -> str:
        return self.urls[index % len(self.urls)]

    def owned(self, total: int, worker: int) -> range:
        """The global indices of ``total`` things that ``worker`` runs."""
        return range(worker, total, self.procs)

    def share(self, total: float) -> float:
        """One worker's part of a total rate or limit."""
        return total / self.procs

    def check(self) -> None:
        """``ValueError`` naming the option for an impossible combination."""
        if not self.urls:
            raise ValueError("give at least one server URL")
        if self.procs < 1 or self.clients < 0 or self.channels < 1 or self.publishers < 0:
            raise ValueError("--procs and --channels must be >= 1, --clients and --publishers >= 0")
        if self.window < 1:
            raise ValueError("--window must be >= 1")
        if self.scenario in ("fanout", "churn") and self.publishers < 1:
            raise ValueError(f"--scenario {self.scenario} needs --publishers >= 1")
        if not 0 < self.churn_fraction <= 1:
            raise ValueError("--churn-fraction must be in (0, 1]")
        if self.rate < 0 or self.ramp < 0 or self.duration < 0:
            raise ValueError("--rate, --ramp and --duration must not be negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        values = dict(data)
        tokens = values.pop("tokens")
        tokens["channels"] = tuple(tokens.get("channels", ("*",)))
        values["urls"] = tuple(values["urls"])
        return cls(tokens=TokenSpec(**tokens), **values)

    def public(self) -> dict[str, Any]:
        """``to_dict`` without the secret, for results files."""
        data = self.to_dict()
        if data["tokens"].get("secret"):
            data["tokens"]["secret"] = "***"
        return data
