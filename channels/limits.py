"""Limits (promise 6): what they are, and the token buckets that enforce the rates.

Pure: no I/O, no clock of its own (callers pass ``now``, monotonic seconds), so
every threshold is unit-tested exactly. A rate of 0 (or a count of 0) means
"no limit"; the defaults and the reasons for them are in the README.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Every client-facing limit. Server tokens (``role: server``) are exempt from the
    rate limits and the per-user connection and subscription limits; payload and
    send-queue limits apply to everyone."""

    publish_rate: float = 20.0  # publishes per connection per second (sustained)
    publish_burst: int = 40  # ... and how many may come at once
    connect_rate: float = 20.0  # new connections per client IP per second
    connect_burst: int = 100
    connections_per_user: int = 10  # concurrent, across all instances
    subscriptions_per_connection: int = 100
    # every other call (subscribe, unsubscribe, history, presence, refresh): each costs
    # store and broker round trips, and a subscribe loop would otherwise be unbounded
    call_rate: float = 20.0  # per connection per second (sustained)
    call_burst: int = 200  # ... at once: an app re-subscribing its channels after a reconnect

    def publish_bucket(self) -> TokenBucket | None:
        """A fresh per-connection publish bucket, or ``None`` when publishes are unlimited."""
        if self.publish_rate <= 0:
            return None
        return TokenBucket(self.publish_rate, self.publish_burst)

    def call_bucket(self) -> TokenBucket | None:
        """A fresh per-connection bucket for the other calls, or ``None`` when unlimited."""
        if self.call_rate <= 0:
            return None
        return TokenBucket(self.call_rate, self.call_burst)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each call takes one.

    ``take(now)`` returns 0.0 when a token was taken, otherwise the seconds until
    one will be available (nothing is taken then): the ``retry_after`` a client gets.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """True when the bucket is back to ``burst``: forgetting it changes nothing."""
        self._refill(now)
        return self._tokens >= self.burst

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now


class KeyedBuckets:
    """One ``TokenBucket`` per key (client IP, token), with bounded memory.

    Buckets that have refilled completely are forgotten (a new one is identical).
    If more than ``max_keys`` buckets are still draining, the oldest half is
    dropped: under a flood of distinct keys memory wins over exactness.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """0.0 if ``key`` may proceed, else its ``retry_after`` in seconds."""
        if now >= self._next_sweep or len(self._buckets) >= self.max_keys:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        # a bucket is full again burst/rate seconds after its last take
        self._next_sweep = now + max(1.0, self.burst / self.rate)
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            for key in list(self._buckets)[: len(self._buckets) // 2 + 1]:
                del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, never 0."""
    return str(max(1, math.ceil(seconds)))
