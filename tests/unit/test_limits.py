"""Token buckets and keyed rate limits: exact thresholds with an explicit clock."""

from __future__ import annotations

import pytest

from channels.errors import AppError, ErrorCode
from channels.limits import KeyedBuckets, Limits, TokenBucket, retry_after_header


def test_bucket_allows_the_burst_then_says_when_to_retry() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token every 1/rate seconds
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_bucket_refills_to_burst_and_no_further() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert not bucket.is_full(0.1)
    assert bucket.is_full(100.0)
    assert [bucket.take(100.0) for _ in range(3)][:2] == [0.0, 0.0]


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(9.0) == pytest.approx(1.0)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


def test_keyed_buckets_are_independent_and_forget_idle_keys() -> None:
    limiter = KeyedBuckets(rate=1.0, burst=2)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.take("b", 0.0) == 0.0
    assert len(limiter) == 2
    limiter.take("c", 10.0)  # the sweep drops the refilled buckets of a and b
    assert len(limiter) == 1


def test_keyed_buckets_memory_is_bounded_under_a_flood_of_keys() -> None:
    limiter = KeyedBuckets(rate=0.001, burst=1, max_keys=100)
    for i in range(10_000):
        limiter.take(f"ip{i}", 0.0)
        assert len(limiter) <= 100


def test_limits_defaults_and_unlimited_publish() -> None:
    limits = Limits()
    assert (limits.publish_rate, limits.publish_burst) == (20.0, 40)
    assert (limits.connect_rate, limits.connect_burst) == (20.0, 100)
    assert (limits.connections_per_user, limits.subscriptions_per_connection) == (10, 100)
    assert limits.publish_bucket() is not None
    assert Limits(publish_rate=0).publish_bucket() is None


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after_header(x) for x in (0.0, 0.01, 1.0, 1.2)] == ["1", "1", "1", "2"]


def test_rate_limited_error_carries_retry_after() -> None:
    err = AppError(ErrorCode.RATE_LIMITED, "slow down", retry_after=0.12345)
    assert err.temporary
    assert err.to_dict() == {"code": "rate_limited", "message": "slow down", "retry_after": 0.123}
    assert AppError(ErrorCode.BAD_REQUEST, "x").to_dict() == {"code": "bad_request", "message": "x"}
