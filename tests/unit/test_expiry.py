"""The expiry clock: warn ``lead`` before, close ``grace`` after, refresh reschedules."""

from __future__ import annotations

from handlers.expiry import Deadline, Due, ExpiryClock


def test_warns_before_and_closes_after_the_grace() -> None:
    clock = ExpiryClock(lead=60, grace=5)
    clock.track("a", expires_at=1000.0, now=0.0)
    assert clock.due(939.9) == []
    assert clock.due(940.0) == [Deadline("a", Due.WARN, 1000.0)]
    assert clock.due(1004.9) == []
    assert clock.due(1005.0) == [Deadline("a", Due.CLOSE, 1000.0)]
    assert clock.due(10_000.0) == [] and len(clock) == 0


def test_a_token_shorter_than_the_lead_is_warned_at_once() -> None:
    clock = ExpiryClock(lead=60, grace=0)
    clock.track("a", expires_at=130.0, now=100.0)
    assert clock.due(100.0) == [Deadline("a", Due.WARN, 130.0)]


def test_refresh_replaces_the_old_deadlines() -> None:
    clock = ExpiryClock(lead=10, grace=2)
    clock.track("a", expires_at=100.0, now=0.0)
    assert [d.action for d in clock.due(95.0)] == [Due.WARN]
    clock.track("a", expires_at=500.0, now=95.0)
    assert clock.due(300.0) == []  # the old close at 102 is skipped
    assert [d.action for d in clock.due(502.0)] == [Due.WARN, Due.CLOSE]


def test_forget_and_no_expiry() -> None:
    clock = ExpiryClock(lead=1, grace=1)
    clock.track("a", expires_at=10.0, now=0.0)
    clock.track("b", expires_at=None, now=0.0)
    clock.forget("a")
    assert clock.due(100.0) == [] and len(clock) == 0


def test_ten_thousand_connections_come_due_in_order_and_stale_entries_are_compacted() -> None:
    clock = ExpiryClock(lead=0, grace=0)
    for i in range(10_000):
        clock.track(f"c{i}", expires_at=float(10_000 - i), now=0.0)
    for _ in range(20):  # refresh storms leave stale entries behind
        for i in range(100):
            clock.track(f"c{i}", expires_at=float(10_000 - i), now=0.0)
    assert len(clock._heap) <= 4 * len(clock) + 2
    due = clock.due(20_000.0)
    assert [d.expires_at for d in due] == sorted(d.expires_at for d in due) and len(due) == 10_000
