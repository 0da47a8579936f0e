"""A token bucket per caller, in the API process's memory.

``shoal api`` (and ``shoal up``) run one uvicorn process, so one process holds every bucket;
N API processes behind a balancer each keep their own, and together allow N times the rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """``rate`` requests per second per key, ``burst`` at once after a quiet spell.

    Keys seen are remembered in a bounded map: past ``max_keys``, the buckets that have filled
    up again (indistinguishable from a new one) are dropped, then the least recently used."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> int:
        """Take one token of ``key``'s bucket: ``0`` when there was one, else the whole seconds
        to wait for the next (a ``Retry-After``)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = max(1, math.ceil((1 - tokens) / self.rate))
        self._buckets[key] = (tokens, now)  # re-inserted: the dict's order is last use
        if len(self._buckets) > self.max_keys:
            self._shrink(now)
        return wait

    def _shrink(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > self.max_keys:  # all busy: forget the least recent half
            for k in list(self._buckets)[: len(self._buckets) - self.max_keys // 2]:
                del self._buckets[k]
