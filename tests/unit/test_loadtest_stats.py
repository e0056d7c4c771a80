"""Seq accounting (loss, duplicates, order violations) on synthetic sequences, and the histogram."""

from __future__ import annotations

import math
import random

import pytest

from loadtest.stats import Histogram, Integrity, SeqTracker


def track(seqs: list[int], start: int = 0) -> SeqTracker:
    tracker = SeqTracker(start=start)
    for seq in seqs:
        tracker.add(seq)
    return tracker


def test_a_perfect_sequence_is_clean() -> None:
    t = track(list(range(1, 1001)))
    assert (t.loss(1000), t.duplicates, t.order_violations) == (0, 0, 0)
    assert t.caught_up(1000) and not t.ahead


def test_gaps_are_loss_once_the_head_is_known() -> None:
    t = track([1, 2, 4, 5, 8])
    assert t.loss(8) == 3  # 3, 6, 7
    assert t.loss(10) == 5  # and 9, 10 never came
    assert t.loss(5) == 1
    assert not t.caught_up(8)
    assert t.order_violations == 0 and t.duplicates == 0


def test_duplicates_in_order_and_after_a_gap() -> None:
    t = track([1, 2, 2, 3, 5, 5, 1])
    assert t.duplicates == 3
    assert t.loss(5) == 1
    assert t.received == 7


def test_order_violations_count_late_arrivals_not_duplicates() -> None:
    t = track([1, 3, 2, 4, 6, 5])
    assert t.order_violations == 2
    assert t.duplicates == 0
    assert t.loss(6) == 0 and t.caught_up(6)


def test_start_is_what_the_subscriber_already_had() -> None:
    t = track([11, 12, 13], start=10)
    assert t.loss(13) == 0 and t.duplicates == 0
    stale = track([10, 11], start=10)
    assert stale.duplicates == 1  # at or before the subscribe head: already had it
    assert track([], start=10).loss(10) == 0
    assert track([], start=10).loss(15) == 5


def test_memory_stays_bounded_by_gaps_not_events() -> None:
    t = track(list(range(1, 100_001)))
    assert not t.ahead and t.contiguous == 100_000


def test_shuffled_window_matches_a_brute_force_count() -> None:
    rng = random.Random(7)
    seqs = list(range(1, 501))
    for i in range(0, 500, 25):  # local reordering
        chunk = seqs[i:i + 25]
        rng.shuffle(chunk)
        seqs[i:i + 25] = chunk
    dropped = set(rng.sample(range(1, 501), 20))
    received = [s for s in seqs if s not in dropped] + rng.sample(range(1, 501), 10)
    t = track(received)
    seen: set[int] = set()
    dup = order = highest = 0
    for s in received:
        if s in seen:
            dup += 1
            continue
        order += s < highest
        highest = max(highest, s)
        seen.add(s)
    assert t.duplicates == dup
    assert t.order_violations == order
    assert t.loss(500) == 500 - len(seen)


def test_integrity_adds_trackers_and_merges() -> None:
    a, b = Integrity(), Integrity()
    a.add_tracker(track([1, 2, 3]), head=3)
    b.add_tracker(track([1, 1, 3, 2]), head=4)
    a.merge(Integrity.from_dict(b.to_dict()))
    assert a.to_dict() == {"subscriptions": 2, "received": 7, "loss": 1, "duplicates": 1, "order_violations": 1}
    assert not a.clean and Integrity().clean


def test_histogram_percentiles_within_one_percent() -> None:
    h = Histogram()
    values = [i / 1000 for i in range(1, 10_001)]  # 1 ms .. 10 s
    for v in values:
        h.record(v)
    for q in (50, 90, 99):
        exact = values[math.ceil(len(values) * q / 100) - 1] * 1000
        assert h.percentile(q) == pytest.approx(exact, rel=0.01)
    assert h.summary()["max"] == pytest.approx(10_000)
    assert math.isnan(Histogram().percentile(50))


def test_histograms_merge_across_workers_through_json() -> None:
    a, b = Histogram(), Histogram()
    for i in range(100):
        a.record(0.001 * (i + 1))
        b.record(0.1 * (i + 1))
    merged = Histogram.from_dict(a.to_dict())
    merged.merge(Histogram.from_dict(b.to_dict()))
    assert merged.count == 200
    assert merged.percentile(50) == pytest.approx(100, rel=0.01)
    taken = a.take()
    assert taken.count == 100 and a.count == 0
