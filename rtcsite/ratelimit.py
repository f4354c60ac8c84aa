"""Token buckets: the one rate limiter of the site (sockets, offers, chunks, frames)."""

from __future__ import annotations

import time


class TokenBucket:
    """``burst`` actions at once, refilled at ``rate`` per second; a few bytes each (slots:
    every socket holds one)."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
