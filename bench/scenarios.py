"""The standard scenarios, as load tester options, and which servers each one measures.

S1-S6 are the issue's standard scenarios; C1/C2 compare the load tester's two
clients (lean vs python-socketio ``AsyncClient``) on the same server. ``quick``
shrinks every scenario for a smoke run of the suite itself (numbers from a
quick run are not for the record).
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_TARGETS = ("switchboard", "sio", "node")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    args: tuple[str, ...]
    targets: tuple[str, ...] = ALL_TARGETS
    instances: int = 1
    window: tuple[str, str] = ("publish_start", "drain_end")  # phases the CPU is averaged over
    note: str = ""


def standard(quick: bool = False) -> list[Scenario]:
    def n(full: int, small: int) -> str:
        return str(small if quick else full)

    fan = ("--scenario", "fanout", "--procs", "2", "--ramp", "1000", "--drain-timeout", "90")
    return [
        Scenario("S1", "hold 10,000 connections on one instance",
                 ("--scenario", "connect", "--clients", n(10_000, 500), "--procs", "2", "--ramp", "1000",
                  "--duration", n(15, 3), "--connect-timeout", "30"),
                 window=("hold_start", "hold_end")),
        # window 32: with 8 unacknowledged per publisher the run measured the round trip
        # through server and tester (neither was busy), not how fast a server can fan out
        Scenario("S2", "fan-out on one instance: 1,000 subscribers in one channel",
                 (*fan, "--clients", n(1000, 100), "--channels", "1", "--publishers", "4", "--window", "32",
                  "--events", n(2000, 100), "--duration", "60")),
        Scenario("S2r", "S2 at a fixed 20 events/s (20,000 deliveries/s): latency below saturation",
                 (*fan, "--clients", n(1000, 100), "--channels", "1", "--publishers", "4", "--rate", "20",
                  "--duration", n(15, 3))),
        Scenario("S3", "S2 across two instances through Redis",
                 (*fan, "--clients", n(1000, 100), "--channels", "1", "--publishers", "4", "--window", "32",
                  "--events", n(2000, 100), "--duration", "60"), instances=2),
        Scenario("S4", "many small channels: 2,000 clients in 200 channels",
                 (*fan, "--clients", n(2000, 200), "--channels", n(200, 20), "--publishers", "20",
                  "--window", "8", "--events", n(10_000, 1000), "--duration", "60")),
        Scenario("S5", "durable publish throughput: 50 publishers over 100 channels, no subscribers",
                 ("--scenario", "fanout", "--clients", "0", "--channels", "100", "--publishers", "50",
                  "--window", "16", "--duration", n(15, 3), "--ramp", "1000"),
                 window=("publish_start", "publish_end")),
        Scenario("S5r", "S5 at a fixed 5,000 publishes/s: ack latency below saturation",
                 ("--scenario", "fanout", "--clients", "0", "--channels", "100", "--publishers", "50",
                  "--rate", "5000", "--window", "16", "--duration", n(15, 3), "--ramp", "1000"),
                 window=("publish_start", "publish_end")),
        Scenario("S6", "reconnect storm: 2,000 subscribers drop and come back with since at once",
                 ("--scenario", "churn", "--storm", "--clients", n(2000, 200), "--channels", "20",
                  "--publishers", "4", "--rate", "200", "--duration", n(20, 6), "--churn-offline", "2",
                  "--procs", "2", "--ramp", "1000", "--drain-timeout", "90"),
                 targets=("switchboard",),
                 note="peers cannot recover with since (they store nothing), so S6 runs on Switchboard only"),
    ]


def client_comparison(quick: bool = False) -> list[Scenario]:
    out = []
    for client in ("lean", "sio"):
        out.append(Scenario(f"C1-{client}", f"{client} client: hold 2,000 connections in one worker process",
                            ("--scenario", "connect", "--client", client, "--clients", "200" if quick else "2000",
                             "--procs", "1", "--ramp", "500", "--duration", "10"),
                            targets=("switchboard",), window=("ramp_start", "hold_end")))
        out.append(Scenario(f"C2-{client}", f"{client} client: receive fan-out, 200 subscribers, one worker",
                            ("--scenario", "fanout", "--client", client, "--clients", "200", "--publishers", "2",
                             "--window", "8", "--events", "100" if quick else "1000", "--duration", "60",
                             "--procs", "1", "--ramp", "500"),
                            targets=("switchboard",)))
    return out
