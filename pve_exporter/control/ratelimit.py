"""Token buckets with an injectable clock, one per client address (failed logins, power requests)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """`capacity` tokens at most, refilled at `rate` tokens per second."""

    __slots__ = ("_clock", "capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float]) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("a bucket needs capacity >= 1 and a positive rate")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self._clock = clock
        self.tokens = float(capacity)
        self.updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def retry_after(self) -> float:
        """0 if a token is available now, else the seconds until one is."""
        self._refill()
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate

    def take(self) -> float:
        """Take a token: 0 on success, else the seconds to wait (nothing is taken)."""
        wait = self.retry_after()
        if wait == 0:
            self.tokens -= 1
        return wait

    def drain(self) -> None:
        """Take a token even if it leaves the bucket in debt (every failed login counts)."""
        self._refill()
        self.tokens = max(self.tokens - 1, -self.capacity)

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.capacity


class KeyedLimiter:
    """One bucket per key (a client address). Memory is bounded: full buckets are forgotten
    first, and beyond `max_keys` the least recently used one goes."""

    def __init__(
        self, burst: int, per_minute: float, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str) -> TokenBucket:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict()
            b = self._buckets[key] = TokenBucket(self.burst, self.rate, self.clock)
        else:
            self._buckets.move_to_end(key)
        return b

    def _evict(self) -> None:
        for k in [k for k, b in self._buckets.items() if b.full]:
            del self._buckets[k]
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 = now), without taking anything."""
        b = self._buckets.get(key)
        return 0.0 if b is None else b.retry_after()

    def take(self, key: str) -> float:
        return self._bucket(key).take()

    def failure(self, key: str) -> None:
        self._bucket(key).drain()

    def reconfigure(self, burst: int, per_minute: float) -> None:
        if (burst, per_minute / 60.0) != (self.burst, self.rate):
            self.burst, self.rate = burst, per_minute / 60.0
            self._buckets.clear()


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds, rounded up (never 0 for a rejection)."""
    return str(max(1, math.ceil(seconds)))
